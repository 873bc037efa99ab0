"""OpenAI-compatible backend (OpenAI, vLLM, llama.cpp server, any compatible endpoint).

The SDK's own retries are off (`max_retries=0`): `ModelClient` retries, so attempts are
counted once and never multiplied by the SDK. Errors become `ModelCallError`s that say
whether a retry can help and, if not, what to fix.
"""
from __future__ import annotations

import threading

import openai
from openai.types.chat import ChatCompletion
from pydantic import SecretStr

from gravity_core.llm import (
    BackendIdentity, ChatReply, ChatRequest, ModelCallError, UnsupportedFeature, classify_status,
)
from gravity_core.llm_config import BackendConfig

_SCHEMA_HINTS = ("response_format", "json_schema", "schema", "grammar")


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _body_code(exc: openai.APIStatusError) -> str | None:
    body = exc.body if isinstance(exc.body, dict) else {}
    inner = body.get("error", body) if isinstance(body.get("error", body), dict) else body
    return inner.get("code") or inner.get("type")


def to_model_error(exc: Exception) -> ModelCallError:
    """Map an SDK exception onto `ModelCallError` (never echoing request headers)."""
    if isinstance(exc, openai.APITimeoutError):
        return ModelCallError("request timed out", retryable=True, kind="timeout")
    if isinstance(exc, openai.APIConnectionError):
        return ModelCallError("could not connect to the endpoint", retryable=True, kind="connection")
    if isinstance(exc, openai.APIStatusError):
        retryable, message = classify_status(exc.status_code, _body_code(exc))
        return ModelCallError(message, retryable=retryable, status=exc.status_code,
                              retry_after_s=_retry_after(exc), kind=f"http_{exc.status_code}")
    return ModelCallError(f"unexpected error: {type(exc).__name__}", retryable=False)


def reply_from_completion(completion: ChatCompletion) -> ChatReply:
    """A `ChatReply` from a chat completion (a live response or a Batch API output line)."""
    choice = completion.choices[0]
    usage = completion.usage
    return ChatReply(text=choice.message.content or "", finish_reason=choice.finish_reason or "stop",
                     input_tokens=usage.prompt_tokens if usage else 0,
                     output_tokens=usage.completion_tokens if usage else 0)


class OpenAIBackend:
    """Chat completions against `base_url` with the key from env or a Prefect Secret."""

    def __init__(self, cfg: BackendConfig, api_key: SecretStr, http_client=None):
        self.cfg = cfg
        self.identity = BackendIdentity(backend="openai", model=cfg.model, adapter=cfg.adapter)
        self._client = openai.OpenAI(api_key=api_key.get_secret_value(), base_url=cfg.base_url,
                                     timeout=cfg.timeout_s, max_retries=0, http_client=http_client)
        self._schema_mode = {"auto": "json_schema", "on": "json_schema", "off": "json_object"}[cfg.json_schema]
        self._lock = threading.Lock()

    def _response_format(self, request: ChatRequest) -> dict | None:
        if request.output_schema is None:
            return None
        if self._schema_mode == "json_schema":
            return {"type": "json_schema", "json_schema": {
                "name": request.prompt_name.replace(".", "_")[:64], "schema": request.output_schema}}
        if self._schema_mode == "json_object":
            return {"type": "json_object"}
        return None

    def request_body(self, request: ChatRequest) -> dict:
        """The chat-completions body for a request, response_format included (also the `body`
        of a Batch API line: one builder for both paths)."""
        body = dict(model=self.cfg.model, messages=[m.model_dump() for m in request.messages],
                    temperature=request.params.temperature, top_p=request.params.top_p,
                    max_tokens=request.params.max_tokens, seed=request.params.seed)
        response_format = self._response_format(request)
        if response_format is not None:
            body["response_format"] = response_format
        return body

    def _create(self, body: dict) -> ChatReply:
        return reply_from_completion(self._client.chat.completions.create(**body))

    def _downgrade(self) -> bool:
        """After the endpoint rejected a schema format, use the next weaker one (auto mode only)."""
        with self._lock:
            if self.cfg.json_schema != "auto" or self._schema_mode == "none":
                return False
            self._schema_mode = {"json_schema": "json_object", "json_object": "none"}[self._schema_mode]
            return True

    def complete(self, request: ChatRequest) -> ChatReply:
        while True:
            body = self.request_body(request)
            response_format = body.get("response_format")
            try:
                return self._create(body)
            except openai.APIStatusError as exc:
                if response_format and _rejects_format(exc) and self._downgrade():
                    continue
                if response_format and _rejects_format(exc) and self.cfg.json_schema == "on":
                    raise UnsupportedFeature(
                        f"endpoint rejected response_format {response_format['type']} (HTTP {exc.status_code}); "
                        "set llm json_schema: auto or off", feature="json_schema") from None
                raise to_model_error(exc) from None
            except openai.OpenAIError as exc:
                raise to_model_error(exc) from None
            except ValueError:  # a 200 whose JSON body is cut short: the SDK raises JSONDecodeError
                raise ModelCallError("endpoint sent a malformed (truncated) JSON body", retryable=True,
                                     kind="malformed_body") from None


def _rejects_format(exc: openai.APIStatusError) -> bool:
    """A 400/422/500/501 whose message names the response format: a missing feature, not a blip."""
    text = str(exc.message if hasattr(exc, "message") else exc).lower()
    return exc.status_code in (400, 422, 500, 501) and any(h in text for h in _SCHEMA_HINTS)
