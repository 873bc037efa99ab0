"""Model layer: request key, retries, cache, structured re-asks, ledger, limits (scripted fake)."""
from __future__ import annotations

import json
import multiprocessing
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from gravity_core.llm import (
    BackendIdentity, ChatReply, ChatRequest, Message, ModelCallError, SamplingParams, backoff_seconds, classify_status,
    request_key,
)
from gravity_core.llm_config import BackendConfig, LimitsConfig, LLMConfig
from tasks.llm.cache import RequestCache
from tasks.llm.client import ModelClient, StructuredOutputError
from tasks.llm.fake import FakeBackend
from tasks.llm.ledger import Ledger, read_ledger
from tasks.llm.limits import RATE_MARGIN, Limiter

REQ = ChatRequest(messages=(Message(role="user", content="hello"),), prompt_name="p", prompt_version="1")
ID = BackendIdentity(backend="fake", model="m")


def make_client(tmp_path, backend, sleeps=None, **llm):
    cfg = BackendConfig(backend="fake", fake_script="schema-fill")
    ledger = Ledger(tmp_path / "run", "run-1")
    return ModelClient(backend, cfg, LLMConfig(**llm), RequestCache(tmp_path / "cache.sqlite"), ledger,
                       sleep=(sleeps.append if sleeps is not None else (lambda s: None)))


@pytest.mark.parametrize("change", [
    {"identity": BackendIdentity(backend="fake", model="other")},
    {"identity": BackendIdentity(backend="fake", model="m", adapter="runs/a")},
    {"request": REQ.model_copy(update={"messages": (Message(role="user", content="hello!"),)})},
    {"request": REQ.model_copy(update={"params": SamplingParams(temperature=0.5)})},
    {"request": REQ.model_copy(update={"output_schema": {"type": "object"}})},
    {"request": REQ.model_copy(update={"prompt_version": "2"})},
])
def test_request_key_changes_with_every_component(change):
    assert request_key(change.get("identity", ID), change.get("request", REQ)) != request_key(ID, REQ)


def test_request_key_is_stable():
    assert request_key(ID, REQ) == request_key(ID, ChatRequest.model_validate(REQ.model_dump()))


@pytest.mark.parametrize("status,code,retryable", [
    (408, None, True), (409, None, True), (429, None, True), (500, None, True), (503, None, True),
    (400, None, False), (401, None, False), (403, None, False), (404, None, False), (422, None, False),
    (429, "insufficient_quota", False)])
def test_classify_status(status, code, retryable):
    assert classify_status(status, code)[0] is retryable


def test_backoff_is_exponential_capped_and_honours_retry_after():
    assert [backoff_seconds(n, 0.5, 8, 0) for n in (1, 2, 3, 6)] == [0.5, 1.0, 2.0, 8.0]
    assert backoff_seconds(1, 0.5, 8, 0.2) == pytest.approx(0.6)
    assert backoff_seconds(1, 0.5, 8, 0, retry_after_s=30) == 30
    assert backoff_seconds(1, 0.5, 8, 0, retry_after_s=999) == 120


def test_retries_transient_errors_and_records_attempts(tmp_path):
    sleeps: list[float] = []
    failures = [ModelCallError("503", retryable=True, status=503),
                ModelCallError("429", retryable=True, status=429, retry_after_s=3.0)]
    client = make_client(tmp_path, FakeBackend("echo", failures=failures), sleeps)
    assert client.complete(REQ, stage="t", user_id="u1").text == "hello"
    assert len(sleeps) == 2 and sleeps[1] >= 3.0
    client.ledger.flush()
    row = read_ledger(tmp_path / "run").row(0, named=True)
    assert (row["attempts"], row["cached"], row["user_id"], row["stage"]) == (3, False, "u1", "t")


def test_non_retryable_error_fails_at_once_with_a_fix(tmp_path):
    error = ModelCallError(classify_status(401)[1], retryable=False, status=401)
    backend = FakeBackend("echo", failures=[error])
    client = make_client(tmp_path, backend)
    with pytest.raises(ModelCallError, match="API key"):
        client.complete(REQ, stage="t")
    assert len(backend.requests) == 1


def test_gives_up_after_max_attempts(tmp_path):
    backend = FakeBackend("echo", failures=[ModelCallError("503", retryable=True)] * 9)
    client = make_client(tmp_path, backend)
    client.cfg = BackendConfig(backend="fake", fake_script="echo", retry={"max_attempts": 3})
    with pytest.raises(ModelCallError, match="after 3 attempt"):
        client.complete(REQ, stage="t")
    assert len(backend.requests) == 3


def test_cache_hit_makes_no_call_and_survives_a_new_process(tmp_path):
    backend = FakeBackend("echo")
    make_client(tmp_path, backend).complete(REQ, stage="t")
    again = make_client(tmp_path, backend)  # new cache object on the same file = new process
    assert again.complete(REQ, stage="t").text == "hello"
    assert len(backend.requests) == 1
    assert again.stats()["calls_cached"] == 1 and again.stats()["calls_made"] == 0


@pytest.mark.parametrize("round_", range(5))
def test_cache_is_safe_under_threads(tmp_path, round_):
    # A fresh file each round: the race that once failed CI was in opening a new database
    # from many threads at once (WAL switch raised "database is locked").
    cache = RequestCache(tmp_path / f"c{round_}.sqlite")
    client = make_client(tmp_path, FakeBackend("echo"))
    client.cache = cache
    requests = [REQ.model_copy(update={"messages": (Message(role="user", content=f"m{i}"),)}) for i in range(40)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(requests))

    def call(r):
        start.wait()  # all threads open their first connection at once
        try:
            client.complete(r, stage="t")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(r,)) for r in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(cache) == 40


class SlowEcho(FakeBackend):
    """Echo that takes a while, so that identical requests overlap in flight."""

    def complete(self, request):
        time.sleep(0.2)
        return super().complete(request)


def test_identical_requests_in_flight_at_once_are_sent_once(tmp_path):
    backend = SlowEcho("echo")
    client = make_client(tmp_path, backend)
    other = REQ.model_copy(update={"messages": (Message(role="user", content="other"),)})
    start = threading.Barrier(6)
    replies: list[str] = []

    def call(request):
        start.wait()
        replies.append(client.complete(request, stage="t", user_id="u").text)
    threads = [threading.Thread(target=call, args=(r,)) for r in (REQ, REQ, REQ, REQ, other, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(replies) == ["hello"] * 4 + ["other"] * 2
    assert len(backend.requests) == 2  # one per distinct request
    assert client.stats()["calls_made"] == 2 and client.stats()["calls_cached"] == 4
    client.ledger.flush()
    ledger = read_ledger(tmp_path / "run")
    assert ledger["cached"].sum() == 4 and len(ledger) == 6
    assert client._in_flight._held == {}  # nothing left behind


def test_the_ledger_parts_a_calls_wait_for_a_slot_from_its_latency(tmp_path):
    """With max_concurrency 1 (llama.cpp's server) a call's latency_s includes the turns of the
    calls before it; queued_s says how much of it was that wait."""
    backend = SlowEcho("echo")
    client = make_client(tmp_path, backend)
    client.limiter = Limiter(LimitsConfig(max_concurrency=1, use_prefect=False), "fake")
    start = threading.Barrier(3)

    def call(text):
        start.wait()
        client.complete(REQ.model_copy(update={"messages": (Message(role="user", content=text),)}), stage="t")
    threads = [threading.Thread(target=call, args=(t,)) for t in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.ledger.flush()
    ledger = read_ledger(tmp_path / "run").sort("queued_s")
    assert ledger["queued_s"].to_list() == pytest.approx([0.0, 0.2, 0.4], abs=0.1)
    assert (ledger["latency_s"] - ledger["queued_s"]).to_list() == pytest.approx([0.2] * 3, abs=0.1)
    # a ledger written before the column existed reads with queued_s null, and totals still add up
    from gravity_core.layout import RunLayout
    from gravity_core.ledger_report import totals
    old = tmp_path / "old"
    old.mkdir()
    ledger.drop("queued_s").write_parquet(RunLayout.of(old).ledger)
    assert read_ledger(old)["queued_s"].null_count() == 3
    assert totals(read_ledger(old))["all"]["queued_s"].item() == 0.0


def _fill_cache(path: str, worker: int) -> None:
    cache = RequestCache(Path(path))
    for i in range(25):
        cache.put(f"w{worker}-{i}", ChatReply(text=str(i)), backend="fake", model="m")


def test_cache_is_safe_across_processes_opening_a_new_file(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    path = str(tmp_path / "shared.sqlite")
    procs = [ctx.Process(target=_fill_cache, args=(path, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert len(RequestCache(Path(path))) == 100


def _parse_int(text: str) -> int:
    value = json.loads(text)["n"]
    if not isinstance(value, int):
        raise ValueError("n must be an integer")
    return value


def test_structured_reasks_with_the_validation_error(tmp_path):
    backend = FakeBackend(['{"n": "x"}', '{"n": 4}'])
    client = make_client(tmp_path, backend)
    assert client.structured(REQ, _parse_int, stage="t", user_id="u") == 4
    assert "n must be an integer" in backend.requests[1].messages[-1].content
    assert client.stats()["first_try_valid_rate"] == 0.0


def test_structured_quarantines_after_the_budget(tmp_path):
    client = make_client(tmp_path, FakeBackend(["nope"] * 3), max_reasks=2)
    with pytest.raises(StructuredOutputError):
        client.structured(REQ, _parse_int, stage="t", user_id="u", item_id="i")
    [row] = client.quarantine.take()
    assert (row["user_id"], row["item_id"], row["raw_text"], row["attempts"]) == ("u", "i", "nope", 3)


def test_ledger_cost_from_price_table(tmp_path):
    client = make_client(tmp_path, FakeBackend("echo", model="gpt-4o"), prices_per_mtok={"gpt-4o": (1e6, 0)})
    client.complete(REQ, stage="t")
    client.ledger.flush()
    ledger = read_ledger(tmp_path / "run")
    assert ledger["cost_usd"][0] == ledger["input_tokens"][0] > 0


def test_ledger_appends_across_flushes(tmp_path):
    client = make_client(tmp_path, FakeBackend("echo"))
    for text in ("a", "b"):
        client.complete(REQ.model_copy(update={"messages": (Message(role="user", content=text),)}), stage="t")
        client.ledger.flush()
    assert read_ledger(tmp_path / "run").height == 2


def test_limiter_caps_concurrency():
    limiter = Limiter(LimitsConfig(max_concurrency=2, use_prefect=False), "x")
    active, peak, lock, full = [0], [0], threading.Lock(), threading.Event()

    def work():
        with limiter.slot():
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
                if active[0] == 2:
                    full.set()
            full.wait(timeout=5)  # hold the slot until both slots were seen taken at once
            time.sleep(0.01)
            with lock:
                active[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert full.is_set() and peak[0] == 2


def test_limiter_spaces_requests_to_the_rate():
    clock, waits = [0.0], []
    limiter = Limiter(LimitsConfig(requests_per_second=4, use_prefect=False), "x",
                      clock=lambda: clock[0], sleep=waits.append)
    for _ in range(5):
        with limiter.slot():
            pass
    step = 0.25 / (1 - RATE_MARGIN)  # 4/s, less the margin for arrival jitter
    assert waits == pytest.approx([step, 2 * step, 3 * step, 4 * step])
    assert 1 / step < 4


def test_ledger_totals_per_stage_and_user(tmp_path):
    from gravity_core.ledger_report import totals
    client = make_client(tmp_path, FakeBackend("echo"))
    client.complete(REQ, stage="a", user_id="u1")
    client.complete(REQ, stage="b", user_id="u1")
    client.ledger.flush()
    tables = totals(read_ledger(tmp_path / "run"))
    assert tables["per stage"]["stage"].to_list() == ["a", "b"]
    assert tables["per stage"]["made"].to_list() == [1, 0] and tables["per stage"]["cached"].to_list() == [0, 1]
    assert isinstance(tables["all"], pl.DataFrame)


class BatchingFake(FakeBackend):
    """A fake that can batch, counting batch calls."""

    def __init__(self, fail_batch=False):
        super().__init__("echo")
        self.batches, self.fail_batch = [], fail_batch

    def complete_batch(self, requests):
        self.batches.append(len(requests))
        if self.fail_batch:
            raise ModelCallError("batch OOM", retryable=False)
        return [self.complete(r) for r in requests]


def _requests(n):
    return [REQ.model_copy(update={"messages": (Message(role="user", content=f"b{i}"),)}) for i in range(n)]


def test_complete_many_batches_misses_and_caches_each(tmp_path):
    backend = BatchingFake()
    client = make_client(tmp_path, backend)
    client.complete(_requests(1)[0], stage="t")  # one already cached
    replies = client.complete_many(_requests(4), stage="t", user_id="u")
    assert [r.text for r in replies] == ["b0", "b1", "b2", "b3"] and backend.batches == [3]
    client.complete_many(_requests(4), stage="t")
    assert backend.batches == [3] and client.stats()["calls_cached"] == 5


def test_complete_many_falls_back_to_single_calls_when_the_batch_fails(tmp_path):
    backend = BatchingFake(fail_batch=True)
    replies = make_client(tmp_path, backend).complete_many(_requests(3), stage="t")
    assert [r.text for r in replies] == ["b0", "b1", "b2"] and backend.batches == [3]
