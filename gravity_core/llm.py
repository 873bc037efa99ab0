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


class ScoreRequest(BaseModel):
    """Score a closed label set for each of several items under one shared prompt.

    The reply a model would write is one line per item, `<item><separator><label>`; instead of
    generating it, each label's log-likelihood after `<item><separator>` is read (in-process: the
    label tokens; over an endpoint: `top_logprobs` at the label's first token). Part of the key."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    messages: tuple[Message, ...]
    items: tuple[str, ...] = Field(min_length=1, description="item keys as written in the reply, e.g. seed ids")
    labels: tuple[str, ...] = Field(min_length=2, description="the closed label set, same for every item")
    separator: str = ": "
    prompt_name: str = "adhoc"
    prompt_version: str = "0"


class LabelScores(BaseModel):
    """Log-probabilities of each label per item, normalised over the label set."""

    model_config = ConfigDict(extra="forbid")
    scores: dict[str, dict[str, float]]
    method: Literal["likelihood", "logprobs"]
    input_tokens: int = 0
    output_tokens: int = 0


def score_key(identity: BackendIdentity, request: ScoreRequest) -> str:
    """Hash of a canonical score request (a different space from chat requests' keys)."""
    canonical = {"identity": identity.model_dump(), "score": request.model_dump(mode="json")}
    blob = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def read_label_logprobs(tokens: list[tuple[str, list[tuple[str, float]]]], items: tuple[str, ...],
                        labels: tuple[str, ...], separator: str = ": ") -> dict[str, dict[str, float]]:
    """Label log-probabilities from a generated `<item><separator><label>` reply's token logprobs.

    `tokens`: (token text, [(alternative text, logprob), ...]) per generated token, as an
    endpoint's `logprobs.content[i].token` / `.top_logprobs` give them. For each item, the first
    non-blank token after `<item><separator>` on a line is where its label starts: each alternative
    there counts toward the label it is an unambiguous start of ("no" -> "no support"). Labels
    not among the alternatives get the lowest alternative's log-probability (an upper bound).
    Normalised over the label set. Raises ValueError for an item that is never answered."""
    import math
    gap = separator.rstrip().lower()
    found: dict[str, dict[str, float]] = {}
    line = ""
    for text, alternatives in tokens:
        head = line.strip().lower()
        item = _named_item(head[: len(head) - len(gap)], items) if head.endswith(gap) else None
        pending = [item] if item is not None and item not in found else []
        if pending and text.strip():
            totals: dict[str, list[float]] = {label: [] for label in labels}
            for alt, logprob in alternatives or [(text, 0.0)]:
                norm = alt.strip().lower()
                matches = [label for label in labels if norm and label.lower().startswith(norm)]
                if len(matches) == 1:
                    totals[matches[0]].append(logprob)
            floor = min((lp for _, lp in alternatives), default=-30.0) if alternatives else -30.0
            raw = {label: (max(v) + math.log(sum(math.exp(x - max(v)) for x in v)) if v else floor)
                   for label, v in totals.items()}
            found[pending[0]] = normalise_logprobs(raw)
        line = (line + text).rsplit("\n", 1)[-1]
    written = _written_labels("".join(text for text, _ in tokens), items, labels, gap)
    for item in items:  # the label began inside a token (e.g. ": support"): only the written one is known
        if item not in found and item in written:
            found[item] = {label: (0.0 if label == written[item] else -30.0) for label in labels}
    missing = [i for i in items if i not in found]
    if missing:
        raise ValueError(f"the reply answers no label for {missing[:5]}")
    return found


def normalise_logprobs(totals: dict[str, float]) -> dict[str, float]:
    """Log-probabilities over a label set: the log-softmax of each label's total log-likelihood."""
    import math
    top = max(totals.values())
    norm = top + math.log(sum(math.exp(v - top) for v in totals.values()))
    return {label: round(v - norm, 6) for label, v in totals.items()}


def _named_item(head: str, items: tuple[str, ...]) -> str | None:
    """The item a reply line's head names: its id without the wrappers small models add (a list
    bullet, quotes, backticks, markdown bold, the angle brackets of a prompt's "<statement id>:
    ..."), or, where no id is a number, its 1-based position in the request ("<1>: support")."""
    key = head.strip().lstrip("-*•\"'`<[( ").rstrip("\"'`>]) *.").lower()
    for item in items:
        if item.lower() == key:
            return item
    if key.isdigit() and not any(i.isdigit() for i in items) and 1 <= int(key) <= len(items):
        return items[int(key) - 1]
    return None


def _written_labels(text: str, items: tuple[str, ...], labels: tuple[str, ...], gap: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(gap or " ")
        value = value.strip().strip("\"'.").lower()
        item = _named_item(key, items)
        if item is not None and value in [label.lower() for label in labels]:
            out.setdefault(item, labels[[label.lower() for label in labels].index(value)])
    return out
