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
    BackendIdentity, ChatReply, ChatRequest, LabelScores, ModelCallError, ScoreRequest, UnsupportedFeature,
    classify_status, read_label_logprobs,
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


# Response formats from strongest to weakest. llama.cpp's server answers json_schema with a 500
# but honours a schema inside json_object; plain json_object is the last format before none.
_WEAKER = {"json_schema": "json_object_schema", "json_object_schema": "json_object", "json_object": "none"}
_FIRST_MODE = {"auto": "json_schema", "on": "json_schema", "off": "json_object"}


class OpenAIBackend:
    """Chat completions against `base_url` with the key from env or a Prefect Secret."""

    def __init__(self, cfg: BackendConfig, api_key: SecretStr, http_client=None):
        self.cfg = cfg
        self.identity = BackendIdentity(backend="openai", model=cfg.model, adapter=cfg.adapter)
        self._client = openai.OpenAI(api_key=api_key.get_secret_value(), base_url=cfg.base_url,
                                     timeout=cfg.timeout_s, max_retries=0, http_client=http_client)
        self._schema_mode = _FIRST_MODE[cfg.json_schema]
        self.rejected_formats: list[str] = []  # modes the endpoint rejected, in order
        self._logprobs: bool | None = None  # None until an endpoint reply shows whether it gives logprobs
        self._lock = threading.Lock()

    @property
    def schema_mode(self) -> str:
        """The response-format mode in use: json_schema, json_object_schema, json_object or none."""
        return self._schema_mode

    def _response_format(self, request: ChatRequest, mode: str) -> dict | None:
        if request.output_schema is None or mode == "none":
            return None
        if mode == "json_schema":
            return {"type": "json_schema", "json_schema": {
                "name": request.prompt_name.replace(".", "_")[:64], "schema": request.output_schema}}
        if mode == "json_object_schema":
            return {"type": "json_object", "schema": request.output_schema}
        return {"type": "json_object"}

    def request_body(self, request: ChatRequest, mode: str | None = None) -> dict:
        """The chat-completions body for a request, response_format included (also the `body`
        of a Batch API line: one builder for both paths). `mode` defaults to the current one."""
        body = dict(model=self.cfg.model, messages=[m.model_dump() for m in request.messages],
                    temperature=request.params.temperature, top_p=request.params.top_p,
                    max_tokens=request.params.max_tokens, seed=request.params.seed)
        response_format = self._response_format(request, mode or self._schema_mode)
        if response_format is not None:
            body["response_format"] = response_format
        return body

    def _create(self, body: dict) -> ChatReply:
        return reply_from_completion(self._client.chat.completions.create(**body))

    def _downgrade(self, rejected: str) -> None:
        """The endpoint rejected mode `rejected`: use the next weaker one from now on. Only the
        first of several concurrent rejections of the same mode steps down."""
        with self._lock:
            if self._schema_mode == rejected:
                self.rejected_formats.append(rejected)
                self._schema_mode = _WEAKER[rejected]

    def _after_error(self, exc: openai.APIStatusError, body: dict, mode: str) -> None:
        """An error status on `body`: raise it, or step down a format (return: send the request
        again in the next weaker one)."""
        if "response_format" not in body or exc.status_code not in _FORMAT_STATUSES or self.cfg.json_schema == "off":
            raise to_model_error(exc) from None
        if _rejects_format(exc):
            if self.cfg.json_schema == "on":
                raise UnsupportedFeature(
                    f"endpoint rejected response_format {body['response_format']['type']} (HTTP {exc.status_code}); "
                    "set llm json_schema: auto or off", feature="json_schema") from None
            self._downgrade(mode)
            return None
        # A status that does not name the format is an ordinary failure (a transient 500 must not
        # weaken structured output for the rest of the run): the client's retries handle it.
        raise to_model_error(exc) from None

    def complete(self, request: ChatRequest) -> ChatReply:
        while True:
            mode = self._schema_mode
            body = self.request_body(request, mode)
            try:
                reply = self._create(body)
            except openai.APIStatusError as exc:
                self._after_error(exc, body, mode)
                continue
            except openai.OpenAIError as exc:
                raise to_model_error(exc) from None
            except ValueError:  # a 200 whose JSON body is cut short: the SDK raises JSONDecodeError
                raise ModelCallError("endpoint sent a malformed (truncated) JSON body", retryable=True,
                                     kind="malformed_body") from None
            return reply

    # -- label scoring through top_logprobs ----------------------------------------------------

    @property
    def can_score(self) -> bool:
        """False once the endpoint showed it returns no logprobs (detected once, never retried)."""
        return self._logprobs is not False

    def score_labels(self, request: ScoreRequest) -> LabelScores:
        """The labels' log-probabilities read from `top_logprobs` where each label starts in a
        greedy `<item>: <label>` reply. An endpoint without logprobs (a 4xx naming them, or a
        reply without them, as `transformers serve` gives) raises `UnsupportedFeature` now and
        at once from then on: the caller asks for the labels as JSON instead."""
        if self._logprobs is False:
            raise UnsupportedFeature("endpoint returns no logprobs", feature="logprobs")
        body = dict(model=self.cfg.model, messages=[m.model_dump() for m in request.messages], temperature=0.0,
                    max_tokens=sum(len(i) + 8 for i in request.items) + 16, seed=0, logprobs=True,
                    top_logprobs=TOP_LOGPROBS)
        try:
            completion = self._client.chat.completions.create(**body)
        except openai.APIStatusError as exc:
            if exc.status_code in (400, 422, 501) and "logprob" in str(exc.message).lower():
                self._logprobs = False
                raise UnsupportedFeature(f"endpoint rejects logprobs (HTTP {exc.status_code})",
                                         feature="logprobs") from None
            raise to_model_error(exc) from None
        except openai.OpenAIError as exc:
            raise to_model_error(exc) from None
        except ValueError:  # a 200 whose JSON body is cut short, as in `complete`
            raise ModelCallError("endpoint sent a malformed (truncated) JSON body", retryable=True,
                                 kind="malformed_body") from None
        choice = completion.choices[0]
        content = choice.logprobs.content if choice.logprobs is not None else None
        if not content:
            self._logprobs = False
            raise UnsupportedFeature("endpoint returned no logprobs", feature="logprobs")
        self._logprobs = True
        tokens = [(t.token, [(a.token, a.logprob) for a in (t.top_logprobs or [])]) for t in content]
        try:
            scores = read_label_logprobs(tokens, request.items, request.labels, request.separator)
        except ValueError as exc:  # the model did not answer in lines: this request is asked as JSON
            raise UnsupportedFeature(f"unscorable reply: {exc}", feature="scorable_reply") from None
        usage = completion.usage
        return LabelScores(scores=scores, method="logprobs", input_tokens=usage.prompt_tokens if usage else 0,
                           output_tokens=usage.completion_tokens if usage else 0)


TOP_LOGPROBS = 10  # alternatives per position (OpenAI allows up to 20)
_FORMAT_STATUSES = (400, 422, 500, 501)


def _rejects_format(exc: openai.APIStatusError) -> bool:
    """A 400/422/500/501 whose message names the response format: a missing feature, not a blip."""
    text = str(exc.message if hasattr(exc, "message") else exc).lower()
    return exc.status_code in _FORMAT_STATUSES and any(h in text for h in _SCHEMA_HINTS)
