"""OpenAI-compatible backend against a scripted HTTP server on loopback (the real SDK)."""
from __future__ import annotations

import pytest
from pydantic import SecretStr

from gravity_core.llm import ChatRequest, Message, ModelCallError, UnsupportedFeature
from gravity_core.llm_config import BackendConfig, LLMConfig
from tasks.llm.cache import RequestCache
from tasks.llm.client import ModelClient
from tasks.llm.ledger import Ledger
from tasks.llm.openai_backend import OpenAIBackend

SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
REQ = ChatRequest(messages=(Message(role="user", content="hi"),), output_schema=SCHEMA, prompt_name="t.p")


def backend(server, **cfg) -> OpenAIBackend:
    config = BackendConfig(backend="openai", model="gpt-4o", base_url=server.url, **cfg)
    return OpenAIBackend(config, SecretStr("sk-test"))


def client(server, tmp_path, **cfg) -> ModelClient:
    b = backend(server, **cfg)
    return ModelClient(b, b.cfg, LLMConfig(), RequestCache(tmp_path / "c.sqlite"), Ledger(None, "r"),
                       sleep=lambda s: None)


def test_completion_with_json_schema_and_usage(openai_server):
    openai_server.default_text = '{"a": "x"}'
    reply = backend(openai_server).complete(REQ)
    assert reply.text == '{"a": "x"}' and (reply.input_tokens, reply.output_tokens) == (11, 7)
    sent = openai_server.requests[0]["body"]
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"] == SCHEMA


def test_sdk_does_not_retry_itself(openai_server):
    openai_server.queue = [(503, {"error": {"message": "busy"}}, {})]
    with pytest.raises(ModelCallError) as err:
        backend(openai_server).complete(REQ)
    assert err.value.retryable and len(openai_server.requests) == 1


def test_client_retries_503_and_honours_retry_after(openai_server, tmp_path):
    openai_server.queue = [(503, {"error": {"message": "busy"}}, {}),
                           (429, {"error": {"message": "slow down"}}, {"retry-after": "2"})]
    sleeps = []
    c = client(openai_server, tmp_path)
    c._sleep = sleeps.append
    assert c.complete(REQ, stage="t").text == '{"ok": true}'
    assert len(openai_server.requests) == 3 and sleeps[1] >= 2


@pytest.mark.parametrize("status,match", [(401, "API key"), (404, "model or endpoint"), (422, "could not process")])
def test_final_errors_say_what_to_fix(openai_server, tmp_path, status, match):
    openai_server.queue = [(status, {"error": {"message": "no"}}, {})]
    with pytest.raises(ModelCallError, match=match):
        client(openai_server, tmp_path).complete(REQ, stage="t")
    assert len(openai_server.requests) == 1


def test_insufficient_quota_is_not_retried(openai_server, tmp_path):
    openai_server.queue = [(429, {"error": {"message": "quota", "code": "insufficient_quota"}}, {})]
    with pytest.raises(ModelCallError, match="insufficient_quota"):
        client(openai_server, tmp_path).complete(REQ, stage="t")
    assert len(openai_server.requests) == 1


def formats(server) -> list[tuple[str | None, bool]]:
    """(response_format type, whether it carries the schema) for each request the server saw."""
    sent = [r["body"].get("response_format") or {} for r in server.requests]
    return [(f.get("type"), "schema" in f or "schema" in f.get("json_schema", {})) for f in sent]


def test_auto_mode_degrades_once_to_json_object_with_schema(openai_server):
    openai_server.queue = [(500, {"error": {"message": "json_schema response_format not supported"}}, {})]
    b = backend(openai_server)
    b.complete(REQ)
    b.complete(REQ)
    assert formats(openai_server) == [("json_schema", True), ("json_object", True), ("json_object", True)]
    assert openai_server.requests[1]["body"]["response_format"] == {"type": "json_object", "schema": SCHEMA}
    assert b.schema_mode == "json_object_schema" and b.rejected_formats == ["json_schema"]


def test_auto_mode_walks_the_whole_chain_down_to_no_format(openai_server):
    rejected = (400, {"error": {"message": "unsupported response_format"}}, {})
    openai_server.queue = [rejected, rejected, rejected]
    b = backend(openai_server)
    b.complete(REQ)
    b.complete(REQ)
    assert formats(openai_server) == [("json_schema", True), ("json_object", True), ("json_object", False),
                                      (None, False), (None, False)]
    assert b.rejected_formats == ["json_schema", "json_object_schema", "json_object"]


def test_a_500_that_names_no_format_is_a_blip_never_a_downgrade(openai_server, tmp_path):
    # a transient 500 on the first request must not weaken structured output for the whole run
    openai_server.queue = [(500, {"error": {"message": "Internal Server Error"}}, {})]
    c = client(openai_server, tmp_path)
    assert c.complete(REQ, stage="t").text == '{"ok": true}'
    assert formats(openai_server) == [("json_schema", True)] * 2
    assert c.backend.schema_mode == "json_schema" and c.backend.rejected_formats == []


def test_concurrent_rejections_of_one_format_step_down_once(openai_server):
    b = backend(openai_server)
    b._downgrade("json_schema")
    b._downgrade("json_schema")  # a second thread that sent json_schema before the first stepped down
    assert b.schema_mode == "json_object_schema" and b.rejected_formats == ["json_schema"]


def test_off_mode_sends_plain_json_object(openai_server):
    backend(openai_server, json_schema="off").complete(REQ)
    assert formats(openai_server) == [("json_object", False)]


def test_forced_json_schema_reports_unsupported_instead_of_retrying(openai_server):
    openai_server.queue = [(400, {"error": {"message": "response_format json_schema is not supported"}}, {})]
    with pytest.raises(UnsupportedFeature, match="json_schema"):
        backend(openai_server, json_schema="on").complete(REQ)
    assert len(openai_server.requests) == 1


def test_label_logprobs_are_read_where_each_label_starts():
    from gravity_core.llm import read_label_logprobs
    labels = ("support", "no support", "neutral")
    tokens = [("wvs", []), ("-001", []), (":", []), (" support", [(" support", -0.2), (" no", -1.9), ("neutral", -3.0)]),
              ("\n", []), ("wvs-002", []), (":", []), (" ", []), ("no", [("no", -0.1), ("n", -2.5), ("sup", -3.1)]),
              (" support", [])]
    scores = read_label_logprobs(tokens, ("wvs-001", "wvs-002"), labels)
    assert max(scores["wvs-001"], key=scores["wvs-001"].get) == "support"
    assert max(scores["wvs-002"], key=scores["wvs-002"].get) == "no support"
    # "n" starts two labels: ambiguous, ignored; neutral then gets the lowest alternative (an upper bound)
    assert scores["wvs-002"]["neutral"] == pytest.approx(scores["wvs-002"]["support"])
    with pytest.raises(ValueError, match="wvs-003"):
        read_label_logprobs(tokens, ("wvs-001", "wvs-003"), labels)


def test_label_logprobs_are_read_after_an_id_the_model_wrapped():
    """Qwen2.5-1.5B through llama.cpp answered a third of the quality run's scored values requests
    as `<hof-02>: no support`, copying the prompt's "<statement id>: support" literally; such
    replies were unscorable and each cost a second request as JSON."""
    from gravity_core.llm import read_label_logprobs
    labels = ("support", "no support", "neutral")
    tokens = [("<h", []), ("of", []), ("-", []), ("0", []), ("2", []), (">:", []),
              (" no", [(" no", -0.3), (" support", -1.6), (" neutral", -2.8)]), (" support", []), ("\n", []),
              ("**sch-01**", []), (":", []), (" neutral", [(" neutral", -0.4), (" support", -1.2)]), ("\n", []),
              ("`wvs-002`: support", [])]
    scores = read_label_logprobs(tokens, ("hof-02", "sch-01", "wvs-002"), labels)
    assert max(scores["hof-02"], key=scores["hof-02"].get) == "no support"
    assert scores["hof-02"]["no support"] == pytest.approx(-0.3, abs=0.05)
    assert max(scores["sch-01"], key=scores["sch-01"].get) == "neutral"
    assert scores["wvs-002"]["support"] == 0.0  # written inside one token: only the written label is known
    # a wrapped id that is not the asked one still answers nothing
    with pytest.raises(ValueError, match="hof-03"):
        read_label_logprobs(tokens, ("hof-03",), labels)


def test_label_logprobs_are_read_after_a_position_the_model_wrote_for_the_id():
    """Asked for one statement, the 1.5B over llama.cpp once per reader wrote `<1>: support` for
    hof-10: a number names the request's item at that position, unless the ids are numbers."""
    from gravity_core.llm import read_label_logprobs
    labels = ("support", "no support", "neutral")
    tokens = [("<", []), ("1", []), (">:", []), (" support", [(" support", -0.1), (" neutral", -2.4)]), ("\n", []),
              ("2: neutral", [])]
    one = read_label_logprobs(tokens[:4], ("hof-10",), labels)
    assert max(one["hof-10"], key=one["hof-10"].get) == "support"
    two = read_label_logprobs(tokens, ("hof-10", "wvs-003"), labels)
    assert two["hof-10"]["support"] == pytest.approx(-0.1, abs=0.1)
    assert two["wvs-003"]["neutral"] == 0.0  # written inside one token
    # a position past the request's items, or ids that are themselves numbers, name nothing
    with pytest.raises(ValueError, match="hof-10"):
        read_label_logprobs([("3: support", [])], ("hof-10", "wvs-003"), labels)
    with pytest.raises(ValueError, match="'2'"):
        read_label_logprobs([("1: support", [])], ("2",), labels)


def test_an_endpoint_without_logprobs_is_detected_once_then_json_is_asked(openai_server, tmp_path):
    """`transformers serve` ignores logprobs: the first scored call sees none and the backend says
    so from then on without sending more scoring requests."""
    from gravity_core.llm import ScoreRequest
    c = client(openai_server, tmp_path)
    request = ScoreRequest(messages=(Message(role="user", content="x"),), items=("a",), labels=("high", "low"))
    for _ in range(2):
        with pytest.raises(UnsupportedFeature):
            c.score(request, stage="t")
    assert len(openai_server.requests) == 1 and openai_server.requests[0]["body"]["logprobs"] is True
    with pytest.raises(UnsupportedFeature, match="remembered"):  # a new process, same cache: no probe again
        client(openai_server, tmp_path).score(request, stage="t")
    assert len(openai_server.requests) == 1
