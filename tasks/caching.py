"""Task cache keys that follow the code doing the work, and which failures a task retries.

Prefect's TASK_SOURCE hashes only the `@task` function's own body; our tasks are thin, so the
real work lives in the modules they call. `CodeClosure` hashes the source of every project
module the task's module imports (transitively, found by reading the imports) and the prompt
templates those modules name; `ClientIdentity` stands in for a model client input (backend,
model, adapter content hash). Together with the inputs they key every cached task.
"""
from __future__ import annotations

import ast
import hashlib
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy

from gravity_core.llm import RETRYABLE_STATUS, ModelCallError

PROJECT_PACKAGES = ("gravity_core", "tasks")
# ast.parse is not thread-safe in CPython 3.11 ("AST constructor recursion depth mismatch" when
# mapped tasks compute their keys at once); the closure is computed once per module, under a lock.
_CLOSURE_LOCK = threading.Lock()
TRANSIENT_KINDS = frozenset({"timeout", "connection"})


_ROOT = Path(__file__).resolve().parents[1]  # the folder holding gravity_core/ and tasks/


def _source_file(module: str) -> Path | None:
    """The .py file of a project module, found without importing it; None for a name that is
    not a module (`from m import function`)."""
    base = _ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(module: str, tree: ast.AST) -> set[str]:
    """Project modules named by the import statements anywhere in a module (lazy ones included)."""
    package = module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] in PROJECT_PACKAGES and _source_file(m)}


def _names(tree: ast.AST) -> set[str]:
    """String constants and imported names of a module (prompt names, `load_phrasing`)."""
    found = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and isinstance(n.value, str):
            found.add(n.value)
        elif isinstance(n, ast.alias):
            found.add(n.asname or n.name)
    return found


@lru_cache(maxsize=None)
def code_closure(module: str) -> tuple[tuple[str, str], ...]:
    """(name, sha256) of `module`, every project module it imports transitively, every prompt
    template whose name appears as a string in them, and the fixed phrasings if they are used."""
    from tasks.resources import phrasing_file, prompt_file, prompt_names
    seen, todo, names = {}, [module], set()
    while todo:
        name = todo.pop()
        path = _source_file(name)
        if name in seen or path is None:
            continue
        text = path.read_bytes()
        seen[name] = hashlib.sha256(text).hexdigest()
        tree = ast.parse(text)
        names |= _names(tree)
        todo += sorted(_imports(name, tree) - set(seen))
    files = {f"prompt:{p}": prompt_file(p) for p in prompt_names() if p in names}
    if "load_phrasing" in names:
        files["phrasing"] = phrasing_file()
    seen |= {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()}
    return tuple(sorted(seen.items()))


@dataclass
class CodeClosure(CachePolicy):
    """Key on the source of the task's module and everything of ours it depends on."""

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        if not task_ctx:
            return None
        with _CLOSURE_LOCK:
            blob = repr(code_closure(task_ctx.task.fn.__module__)).encode()
        return hashlib.sha256(blob).hexdigest()


@dataclass
class ClientIdentity(CachePolicy):
    """Key on the identity of the `client` input (backend, model, adapter@hash), not the object."""

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        client = (inputs or {}).get("client")
        if client is None:
            return None
        return hashlib.sha256(client.backend.identity.model_dump_json().encode()).hexdigest()


def code_aware(*exclude: str) -> CachePolicy:
    """Inputs (less `exclude` and the client object) + task source + code closure + client identity."""
    inputs = INPUTS
    for name in ("client", *exclude):
        inputs = inputs - name
    return inputs + TASK_SOURCE + CodeClosure() + ClientIdentity()


def transient_only(task, task_run, state) -> bool:
    """Prefect `retry_condition_fn`: retry a task only for a transient endpoint failure (timeout,
    connection, 408/409/429/5xx). Invalid model output replays from the request cache, so a
    retry could never help; nor can a bug."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - a state without a result is not transient
        return False
    return isinstance(exc, ModelCallError) and (exc.kind in TRANSIENT_KINDS or exc.status in RETRYABLE_STATUS)


LLM_TASK = dict(cache_policy=code_aware(), persist_result=True, retries=1, retry_delay_seconds=2,
                retry_condition_fn=transient_only)
