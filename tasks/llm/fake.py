"""Scripted fake backend for tests and dry runs: canned or rule-based replies and
programmable failures. Deterministic: the same request always gets the same reply."""
from __future__ import annotations

import hashlib
import json
import threading
from typing import Callable

from gravity_core.guided import guided_json
from gravity_core.llm import BackendIdentity, ChatReply, ChatRequest, ModelCallError

Script = Callable[[ChatRequest], str]


class _HashOps:
    """Fills a schema from a hash of the request: enum picks and short strings."""

    def __init__(self, seed: str):
        self.seed, self.n = seed, 0

    def _draw(self) -> int:
        self.n += 1
        return int(hashlib.sha256(f"{self.seed}:{self.n}".encode()).hexdigest()[:8], 16)

    def feed(self, text: str) -> None:
        pass

    def choose(self, options: list[str]) -> int:
        return self._draw() % len(options)

    def write_string(self, max_tokens: int) -> str:
        return f"scripted text {self._draw() % 10_000}. It is plausible and short."


def schema_fill(request: ChatRequest) -> str:
    """Valid JSON for any walkable schema; free text otherwise."""
    seed = hashlib.sha256(json.dumps([m.content for m in request.messages]).encode()).hexdigest()
    if request.output_schema is not None:
        return guided_json(request.output_schema, _HashOps(seed))
    return f"Scripted reply {seed[:8]}: a short personalized description."


def refuse_values(request: ChatRequest) -> str:
    """Valid replies, except prose where a stance reply was asked (every user's values fail)."""
    return "I would rather not say." if request.prompt_name == "profile_values" else schema_fill(request)


SCRIPTS: dict[str, Script] = {"schema-fill": schema_fill, "echo": lambda r: r.messages[-1].content,
                              "refuse-values": refuse_values}


def register_script(name: str, script: Script) -> None:
    """Make a script selectable from a recipe (`llm.default.fake_script: NAME`)."""
    SCRIPTS[name] = script


class FakeBackend:
    """Replies from a script; `failures` are raised first, one per attempt, in order."""

    def __init__(self, script: Script | list[str] | str = "schema-fill", failures: list[ModelCallError] | None = None,
                 model: str = "fake"):
        self.identity = BackendIdentity(backend="fake", model=model)
        if isinstance(script, str):
            if script not in SCRIPTS:
                raise KeyError(f"unknown fake script {script!r}; known: {sorted(SCRIPTS)}")
            script = SCRIPTS[script]
        self._script = script
        self._failures = list(failures or [])
        self._lock = threading.Lock()
        self.requests: list[ChatRequest] = []

    def complete(self, request: ChatRequest) -> ChatReply:
        with self._lock:
            self.requests.append(request)
            if self._failures:
                raise self._failures.pop(0)
            text = self._script.pop(0) if isinstance(self._script, list) else self._script(request)
        tokens_in = sum(len(m.content.split()) for m in request.messages)
        return ChatReply(text=text, input_tokens=tokens_in, output_tokens=len(text.split()))
