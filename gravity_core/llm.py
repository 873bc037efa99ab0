"""The model-call contract: requests, replies, the backend protocol and the request key.

Every model call in GRAVITY (profiles, scenarios, generation, the judge) is a `ChatRequest`
handed to a `ChatBackend`. Pure: no SDK, no I/O. Backends live in `tasks/llm/`.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant"]


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    role: Role
    content: str


class SamplingParams(BaseModel):
    """Decoding parameters; part of the request key."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    max_tokens: int = Field(256, ge=1, le=32768, description="cap on generated tokens")
    seed: int | None = Field(0, description="sampling seed where the backend honours one")


class ChatRequest(BaseModel):
    """A rendered chat completion, optionally constrained by a JSON schema."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    messages: tuple[Message, ...]
    params: SamplingParams = SamplingParams()
    output_schema: dict[str, Any] | None = Field(None, description="JSON schema of the reply")
    prompt_name: str = "adhoc"
    prompt_version: str = "0"


class ChatReply(BaseModel):
    """What a backend returned for one attempt."""

    model_config = ConfigDict(extra="forbid")
    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str = "stop"


class BackendIdentity(BaseModel):
    """What distinguishes one backend's answers from another's: part of the request key."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    backend: str
    model: str
    adapter: str | None = None


@runtime_checkable
class ChatBackend(Protocol):
    """One small protocol for every chat model: OpenAI-compatible, embedded, scripted fake."""

    identity: BackendIdentity

    def complete(self, request: ChatRequest) -> ChatReply:
        """Run one attempt; raise `ModelCallError` (or a subclass) on failure."""
        ...


class ModelCallError(Exception):
    """A failed attempt. `retryable` says whether trying again can help."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None,
                 retry_after_s: float | None = None, kind: str = "error"):
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after_s = retry_after_s
        self.kind = kind


class UnsupportedFeature(ModelCallError):
    """The endpoint lacks a feature (e.g. json_schema response_format): degrade, never retry."""

    def __init__(self, message: str, feature: str):
        super().__init__(message, retryable=False, kind="unsupported")
        self.feature = feature


RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
FIX_HINTS = {
    400: "the request was rejected as malformed: check the model name, parameters and prompt size",
    401: "authentication failed: set a valid API key (env var or Prefect Secret block)",
    403: "the key lacks permission for this model or endpoint",
    404: "model or endpoint not found: check llm.model and llm.base_url",
    422: "the endpoint could not process the request: check parameters against its API",
}


def classify_status(status: int, body_code: str | None = None) -> tuple[bool, str]:
    """(retryable, message) for an HTTP status. 429 insufficient_quota is final."""
    if status == 429 and body_code == "insufficient_quota":
        return False, "429 insufficient_quota: the account is out of credit; add billing or switch backend"
    if status in RETRYABLE_STATUS or status >= 500:
        return True, f"HTTP {status}: transient, retrying"
    return False, f"HTTP {status}: {FIX_HINTS.get(status, 'request failed; not retried')}"


def backoff_seconds(attempt: int, base: float, cap: float, jitter: float,
                    retry_after_s: float | None = None) -> float:
    """Exponential backoff min(base*2^(attempt-1), cap) plus jitter in [0, jitter*delay];
    a server's Retry-After wins when longer (bounded by 120 s)."""
    delay = min(base * (2 ** max(attempt - 1, 0)), cap)
    delay += jitter * delay
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, 120.0))
    return delay


def request_key(identity: BackendIdentity, request: ChatRequest) -> str:
    """Hash of the canonical request: backend, model, adapter, messages, params, schema, prompt version."""
    canonical = {
        "identity": identity.model_dump(),
        "messages": [m.model_dump() for m in request.messages],
        "params": request.params.model_dump(),
        "schema": request.output_schema,
        "prompt": [request.prompt_name, request.prompt_version],
    }
    blob = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
