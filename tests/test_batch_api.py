"""Provider Batch API backend against a local fake of the files + batches endpoints (real SDK)."""
from __future__ import annotations

import json

import pytest
from pydantic import SecretStr, ValidationError

from gravity_core.llm import ChatRequest, Message, ModelCallError, request_key
from gravity_core.llm_config import BackendConfig, BatchPollConfig, LLMConfig
from tasks.llm.batch import BatchAPIBackend, state_key
from tasks.llm.cache import RequestCache
from tasks.llm.client import ModelClient
from tasks.llm.ledger import Ledger, read_ledger
from tests.fake_batch_server import FakeBatchServer

SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}


class Interrupted(Exception):
    """Stands in for a killed process."""


@pytest.fixture
def fake():
    server = FakeBatchServer().start()
    yield server
    server.stop()


def requests(n: int, schema: dict | None = None) -> list[ChatRequest]:
    return [ChatRequest(messages=(Message(role="user", content=f"item {i}"),), output_schema=schema,
                        prompt_name="t.batch") for i in range(n)]


def config(fake, **extra) -> BackendConfig:
    return BackendConfig(backend="openai", model="gpt-4o", base_url=fake.url, batch=True,
                         batch_poll={"initial_s": 1, "max_s": 5}, **extra)


def backend(fake, tmp_path, sleep=None) -> BatchAPIBackend:
    return BatchAPIBackend(config(fake), SecretStr("sk-test"), state_dir=tmp_path / "cache" / "batches",
                           sleep=sleep or (lambda s: None))


def client(fake, tmp_path, sleep=None) -> ModelClient:
    b = backend(fake, tmp_path, sleep)
    return ModelClient(b, b.cfg, LLMConfig(), RequestCache(tmp_path / "cache" / "requests.sqlite"),
                       Ledger(tmp_path / "run", "r"), sleep=lambda s: None)


def cid(b: BatchAPIBackend, request: ChatRequest) -> str:
    return request_key(b.identity, request)


def test_results_are_matched_by_custom_id_whatever_the_output_order(fake, tmp_path):
    c = client(fake, tmp_path)
    reqs = requests(4, SCHEMA)
    replies = c.complete_many(reqs, stage="t")
    assert [r.text for r in replies] == ["item 0", "item 1", "item 2", "item 3"]  # output file is reversed
    [batch] = fake.created()
    assert (batch["endpoint"], batch["completion_window"]) == ("/v1/chat/completions", "24h")
    assert fake.files[batch["input_file_id"]]["purpose"] == "batch"
    lines = {line["custom_id"]: line for line in fake.input_lines(batch)}
    for r in reqs:
        line = lines[cid(c.backend, r)]
        assert (line["method"], line["url"]) == ("POST", "/v1/chat/completions")
        assert line["body"] == c.backend.request_body(r)  # the very body a single call sends
        assert line["body"]["response_format"]["json_schema"]["schema"] == SCHEMA
    assert not any(m == "POST" and p.endswith("/chat/completions") for m, p in fake.log)


def test_a_restart_mid_poll_resumes_the_same_batch(fake, tmp_path):
    fake.polls_in_progress = 5
    seen_state = []

    def dies_after_two_polls(seconds):
        seen_state.append(json.loads(next((tmp_path / "cache" / "batches").glob("*.json")).read_text()))
        if len(seen_state) == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        client(fake, tmp_path, sleep=dies_after_two_polls).complete_many(requests(3), stage="t")
    assert seen_state[0]["batch_id"] == "batch_1"  # written before the first wait
    replies = client(fake, tmp_path).complete_many(requests(3), stage="t")
    assert [r.text for r in replies] == ["item 0", "item 1", "item 2"]
    assert len(fake.created()) == 1 and [m for m, p in fake.log if p == "/v1/files"] == ["POST"]
    assert sum(p == "/v1/batches/batch_1" for _, p in fake.log) == 5 + 2  # polls of both runs, one batch
    assert list((tmp_path / "cache" / "batches").glob("*.json")) == []  # done: a re-run would submit afresh


def test_failed_items_are_requeued_once_then_fail_alone(fake, tmp_path):
    c = client(fake, tmp_path)
    reqs = requests(5)
    ids = [cid(c.backend, r) for r in reqs]
    fake.error_batches = {ids[0]: 1, ids[1]: 9}  # item 0 recovers in the re-queue, item 1 never
    fake.statuses = {ids[2]: 500, ids[3]: 400}  # 500 is worth a re-queue, 400 is final at once
    out = c.complete_many(reqs, stage="t", item_ids=[f"i{n}" for n in range(5)], return_errors=True)
    assert [type(r).__name__ for r in out] == ["ChatReply", "ModelCallError", "ModelCallError",
                                               "ModelCallError", "ChatReply"]
    assert (out[0].text, out[4].text, out[2].status, out[3].status) == ("item 0", "item 4", 500, 400)
    first, second = fake.created()
    assert {line["custom_id"] for line in fake.input_lines(second)} == {ids[0], ids[1], ids[2]}
    c.ledger.flush()
    status = dict(read_ledger(tmp_path / "run").select("item_id", "status").iter_rows())
    assert status == {"i0": "ok", "i1": "error: batch_server_error", "i2": "error: http_500",
                      "i3": "error: http_400", "i4": "ok"}


def test_complete_many_raises_a_failed_item_after_caching_the_others(fake, tmp_path):
    c = client(fake, tmp_path)
    reqs = requests(3)
    fake.statuses = {cid(c.backend, reqs[1]): 404}
    with pytest.raises(ModelCallError, match="batch item .* HTTP 404"):
        c.complete_many(reqs, stage="t")
    assert c.cache.get(cid(c.backend, reqs[0])).text == "item 0" and c.cache.get(cid(c.backend, reqs[1])) is None


def test_ledger_prices_batch_calls_at_the_discount_and_a_cache_hit_calls_nothing(fake, tmp_path):
    first = client(fake, tmp_path)
    first.complete_many(requests(2), stage="t")
    first.ledger.flush()
    calls = len(fake.log)
    again = client(fake, tmp_path)
    assert [r.text for r in again.complete_many(requests(2), stage="t")] == ["item 0", "item 1"]
    assert len(fake.log) == calls  # no upload, no batch, no poll, no single call
    again.ledger.flush()
    ledger = read_ledger(tmp_path / "run")
    made, hits = ledger.filter(~ledger["cached"]), ledger.filter(ledger["cached"])
    list_price = LLMConfig().cost_usd("gpt-4o", 11, 7)
    assert made["mode"].to_list() == ["batch", "batch"]
    assert made["cost_usd"].to_list() == pytest.approx([0.5 * list_price] * 2) and list_price > 0
    assert hits["cost_usd"].to_list() == [0.0, 0.0]


def test_poll_intervals_grow_and_are_capped(fake, tmp_path):
    fake.polls_in_progress = 6
    sleeps: list[float] = []
    backend(fake, tmp_path, sleep=sleeps.append).complete_batch(requests(2))
    assert sleeps == [1, 2, 4, 5, 5, 5, 5]  # validating, then 6 x in_progress; completed on poll 8
    assert [BatchPollConfig().interval(n) for n in (0, 1, 5, 50)] == [15, 30, 300, 300]


def test_expired_batch_keeps_its_answers_and_requeues_the_rest(fake, tmp_path):
    b = backend(fake, tmp_path)
    reqs = requests(3)
    fake.end_statuses = ["expired"]
    fake.error_batches = {cid(b, reqs[2]): 1}  # what the batch did not reach before expiring
    assert [r.text for r in b.complete_batch(reqs)] == ["item 0", "item 1", "item 2"]
    assert [len(fake.input_lines(x)) for x in fake.created()] == [3, 1]


def test_a_batch_failing_as_a_whole_falls_back_to_single_calls_at_list_price(fake, tmp_path):
    fake.end_statuses = ["failed"]
    c = client(fake, tmp_path)
    assert [r.text for r in c.complete_many(requests(2), stage="t")] == ["item 0", "item 1"]
    assert sum(p.endswith("/chat/completions") for _, p in fake.log) == 2
    c.ledger.flush()
    assert read_ledger(tmp_path / "run")["mode"].to_list() == ["sync", "sync"]
    assert list((tmp_path / "cache" / "batches").glob("*.json")) == []


def test_single_calls_use_the_normal_endpoint(fake, tmp_path):
    assert backend(fake, tmp_path).complete(requests(1)[0]).text == "item 0"
    assert fake.log == [("POST", "/v1/chat/completions")]


def test_state_key_ignores_order():
    assert state_key(["b", "a"]) == state_key(["a", "b"]) != state_key(["a"])


def test_batch_needs_the_openai_backend():
    with pytest.raises(ValidationError, match="batch: true needs backend openai"):
        BackendConfig(backend="local", batch=True)
    with pytest.raises(ValidationError, match="llm.steps.generate"):
        LLMConfig(default={"backend": "openai", "model": "gpt-4o", "batch": True},
                  steps={"generate": {"backend": "local"}})
    llm = LLMConfig(default={"backend": "openai", "model": "gpt-4o"}, steps={"judge": {"batch": True}},
                    batch_discount=0.4)
    assert (llm.for_step("judge").batch, llm.for_step("profile").batch) == (True, False)
    assert llm.cost_usd("gpt-4o", 1_000_000, 0, batch=True) == pytest.approx(0.4 * 2.5)


def test_factory_picks_the_batch_backend_per_step(fake, tmp_path):
    from tasks.llm.factory import build_client
    from tasks.llm.openai_backend import OpenAIBackend
    llm = LLMConfig(default={"backend": "openai", "model": "gpt-4o", "base_url": fake.url},
                    steps={"judge": {"batch": True}}, cache_dir=str(tmp_path / "cache"))
    judge, profile = build_client(llm, "judge", None, "r"), build_client(llm, "profile", None, "r")
    assert isinstance(judge.backend, BatchAPIBackend) and judge.backend.state.folder == tmp_path / "cache" / "batches"
    assert type(profile.backend) is OpenAIBackend and judge.backend.identity == profile.backend.identity
