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


def test_auto_mode_degrades_once_when_json_schema_is_unsupported(openai_server):
    openai_server.queue = [(500, {"error": {"message": "json_schema response_format not supported"}}, {})]
    b = backend(openai_server)
    b.complete(REQ)
    b.complete(REQ)
    formats = [r["body"].get("response_format", {}).get("type") for r in openai_server.requests]
    assert formats == ["json_schema", "json_object", "json_object"]


def test_forced_json_schema_reports_unsupported_instead_of_retrying(openai_server):
    openai_server.queue = [(400, {"error": {"message": "response_format json_schema is not supported"}}, {})]
    with pytest.raises(UnsupportedFeature, match="json_schema"):
        backend(openai_server, json_schema="on").complete(REQ)
    assert len(openai_server.requests) == 1
