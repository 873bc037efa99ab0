"""Task caches follow the code that does the work (not only the thin task body), the model
client's identity, and retry only what a retry can fix."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import tasks.caching as caching
from gravity_core.llm import BackendIdentity, ModelCallError
from tasks.llm.client import StructuredOutputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project_copy(tmp_path, monkeypatch):
    """A copy of gravity_core/ and tasks/ that the closure is computed from (edits stay in tmp)."""
    for package in ("gravity_core", "tasks"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "data"))
    monkeypatch.setattr(caching, "_ROOT", tmp_path)
    caching.code_closure.cache_clear()
    yield tmp_path
    caching.code_closure.cache_clear()


def keys() -> dict[str, tuple]:
    caching.code_closure.cache_clear()
    return {m: caching.code_closure(m) for m in ("tasks.profiles", "tasks.train_stage", "tasks.scenarios",
                                                  "tasks.generate")}


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_the_closure_covers_the_modules_the_work_happens_in():
    names = dict(caching.code_closure("tasks.train_stage"))
    assert {"tasks.training", "gravity_core.training.config", "tasks.heldout_eval"} <= set(names)
    profiles = dict(caching.code_closure("tasks.profiles"))
    assert {"gravity_core.profile.facets", "prompt:profile_values", "tasks.llm.client"} <= set(profiles)
    assert "tasks.training" not in profiles


def test_editing_a_parser_recomputes_the_stages_that_use_it(project_copy):
    before = keys()
    edit(project_copy / "gravity_core/profile/facets.py", "def parse_stances(", "def parse_stances(  ")
    after = keys()
    assert after["tasks.profiles"] != before["tasks.profiles"]
    assert after["tasks.train_stage"] == before["tasks.train_stage"]


def test_editing_the_training_helper_or_a_config_default_retrains(project_copy):
    before = keys()
    edit(project_copy / "tasks/training.py", "def train_adapter(", "def train_adapter(  ")
    mid = keys()
    assert mid["tasks.train_stage"] != before["tasks.train_stage"]
    assert mid["tasks.profiles"] == before["tasks.profiles"]
    edit(project_copy / "gravity_core/training/config.py", 'default=16, metadata={"help": "LoRA rank"}',
         'default=8, metadata={"help": "LoRA rank"}')
    assert keys()["tasks.train_stage"] != mid["tasks.train_stage"]


def test_editing_a_prompt_template_recomputes_its_stage(project_copy, monkeypatch):
    import tasks.resources as resources
    before = keys()
    prompts = project_copy / "prompts"
    shutil.copytree(ROOT / "gravity_core" / "prompts", prompts)
    monkeypatch.setattr(resources, "prompt_file", lambda name: prompts / f"{name}.yaml")
    assert keys()["tasks.generate"] == before["tasks.generate"]
    edit(prompts / "generate_description.yaml", "user: |", "user: |\n  ")
    after = keys()
    assert after["tasks.generate"] != before["tasks.generate"] and after["tasks.scenarios"] == before["tasks.scenarios"]


class _Client:
    def __init__(self, model: str):
        self.backend = type("B", (), {"identity": BackendIdentity(backend="local", model=model, adapter="a@1")})()


def test_the_client_identity_keys_the_cache_not_the_client_object():
    policy = caching.ClientIdentity()
    a1 = policy.compute_key(None, {"client": _Client("m1")}, {})
    assert a1 == policy.compute_key(None, {"client": _Client("m1")}, {})
    assert a1 != policy.compute_key(None, {"client": _Client("m2")}, {})


class _State:
    def __init__(self, exc):
        self.exc = exc

    def result(self, raise_on_failure=False):
        return self.exc


@pytest.mark.parametrize("exc, retry", [
    (StructuredOutputError("invalid", "raw", 3), False),
    (ValueError("a bug"), False),
    (ModelCallError("HTTP 401", retryable=False, status=401, kind="http_401"), False),
    (ModelCallError("HTTP 503 (after 5 attempts)", retryable=False, status=503, kind="http_503"), True),
    (ModelCallError("timed out", retryable=False, kind="timeout"), True),
    (ModelCallError("could not connect", retryable=False, kind="connection"), True),
])
def test_only_transient_endpoint_failures_are_retried_by_prefect(exc, retry):
    assert caching.transient_only(None, None, _State(exc)) is retry
