"""A canary key must never reach logs, the ledger, the cache, artifacts or results,
even when the endpoint fails and echoes the request headers back."""
from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from gravity_core.recipe import parse_recipe
from tests.test_profiles_flow import ctx, write_ingest

CANARY = "sk-canary-" + uuid.uuid4().hex
pytestmark = pytest.mark.slow


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_canary_key_never_written(prefect_harness, tmp_path, openai_server, monkeypatch, caplog, capsys):
    from flows.profiles import profiles_flow
    monkeypatch.setenv("GRAVITY_TEST_KEY", CANARY)
    openai_server.queue = [(500, "ECHO_HEADERS", {})] * 200
    run_dir = tmp_path / "run"
    write_ingest(run_dir, n_users=2)
    recipe = parse_recipe(f"""
data: {{reviews: [x], meta: [y]}}
banks: {{seed_limit: 4}}
llm:
  default: {{backend: openai, model: gpt-4o, base_url: "{openai_server.url}", api_key_env: GRAVITY_TEST_KEY,
             retry: {{max_attempts: 2, backoff_base_s: 0.0}}}}
  cache_dir: "{tmp_path / 'cache'}"
""")
    with caplog.at_level(logging.DEBUG):
        state = profiles_flow(recipe, ctx(run_dir), return_state=True)
    assert state.is_failed()
    # The key did go out (the server saw it) and came back in the error body ...
    assert any(CANARY in str(r["headers"]) for r in openai_server.requests)
    # ... but nothing GRAVITY wrote or logged holds it.
    assert _files_containing(tmp_path, CANARY.encode()) == []
    assert _files_containing(Path(prefect_harness), CANARY.encode()) == []
    assert CANARY not in caplog.text
    out = capsys.readouterr()
    assert CANARY not in out.out + out.err
    assert CANARY not in (state.message or "")
