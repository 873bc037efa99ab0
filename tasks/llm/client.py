"""ModelClient: the one door every model call goes through.

Cache lookup, throttling, retries with backoff, structured-output re-asks, the ledger and
the model-output quarantine. Backends only implement one attempt (`ChatBackend.complete`).
"""
from __future__ import annotations

import random
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from gravity_core.llm import (
    ChatBackend, ChatReply, ChatRequest, LabelScores, Message, ModelCallError, ScoreRequest, UnsupportedFeature,
    backoff_seconds, request_key, score_key,
)
from gravity_core.llm_config import BackendConfig, LLMConfig
from tasks.llm.ledger import Ledger, LedgerRow
from tasks.llm.limits import Limiter

T = TypeVar("T")


class StructuredOutputError(Exception):
    """The model never produced a valid reply within the re-ask budget."""

    def __init__(self, message: str, raw: str, attempts: int):
        super().__init__(message)
        self.raw = raw
        self.attempts = attempts


@dataclass
class QuarantineSink:
    """Model outputs that failed validation: stage, user, item, reason, raw text."""

    rows: list[dict] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **row) -> None:
        with self._lock:
            self.rows.append(row)

    def take(self) -> list[dict]:
        with self._lock:
            rows, self.rows = self.rows, []
        return rows


class KeyLocks:
    """One lock per request key while anyone holds it. Identical requests in flight at once (the
    same book described for two readers by concurrent tasks) are sent once: the second waits for
    the first and is then served from the cache, paid and ledgered as a cache hit."""

    def __init__(self):
        self._lock = threading.Lock()
        self._held: dict[str, list] = {}  # key -> [lock, holders and waiters]

    @contextmanager
    def hold(self, key: str):
        with self._lock:
            entry = self._held.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._held[key]


class ModelClient:
    """A backend plus everything around it. Thread-safe; shared by a stage's tasks."""

    def __init__(self, backend: ChatBackend, cfg: BackendConfig, llm: LLMConfig, cache, ledger: Ledger,
                 quarantine: QuarantineSink | None = None, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None):
        self.backend = backend
        self.cfg = cfg
        self.llm = llm
        self.cache = cache
        self.ledger = ledger
        self.quarantine = quarantine or QuarantineSink()
        self.limiter = Limiter(cfg.limits, backend.identity.backend)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._count_lock = threading.Lock()
        self._in_flight = KeyLocks()
        self.calls_made = 0
        self.calls_cached = 0
        self.structured_items = 0
        self.structured_valid_first_try = 0

    def _attempt_loop(self, request: ChatRequest, call: Callable, queued: list[float]) -> tuple[ChatReply, int]:
        """`call` with retries and back-off, each attempt in a limiter slot; the seconds spent
        waiting for slots are appended to `queued`."""
        retry = self.cfg.retry
        for attempt in range(1, retry.max_attempts + 1):
            try:
                asked = time.monotonic()
                with self.limiter.slot():
                    queued.append(time.monotonic() - asked)
                    return call(request), attempt
            except UnsupportedFeature:
                raise
            except ModelCallError as exc:
                if not exc.retryable or attempt == retry.max_attempts:
                    final = ModelCallError(f"{exc} (after {attempt} attempt(s))", retryable=False,
                                           status=exc.status, kind=exc.kind)
                    final.attempts = attempt  # the ledger counts requests sent, failed ones included
                    raise final from exc
                delay = backoff_seconds(attempt, retry.backoff_base_s, retry.backoff_cap_s,
                                        retry.jitter * self._rng.random(), exc.retry_after_s)
                self._sleep(delay)
        raise AssertionError("unreachable")

    def complete(self, request: ChatRequest, *, stage: str, user_id: str | None = None,
                 item_id: str | None = None, reasks: int = 0) -> ChatReply:
        """One logical call: served from cache or made (with retries), always ledgered."""
        return self._served(request, request_key(self.backend.identity, request), self.backend.complete,
                            stage=stage, user_id=user_id, item_id=item_id, reasks=reasks)

    def _served(self, request, key: str, call: Callable, *, stage: str, user_id: str | None,
                item_id: str | None, reasks: int = 0,
                on_error: Callable[[ModelCallError], None] | None = None) -> ChatReply:
        """The cache, or `call` with retries (an identical request in flight is waited for, not
        sent again); cached and ledgered either way, failures too."""
        identity = self.backend.identity
        started = time.monotonic()
        with self._in_flight.hold(key):
            queued = [time.monotonic() - started]
            reply = self.cache.get(key)
            cached, attempts, status = reply is not None, 0, "ok"
            try:
                if reply is None:
                    reply, attempts = self._attempt_loop(request, call, queued)
                    self.cache.put(key, reply, identity.backend, identity.model)
            except ModelCallError as exc:  # UnsupportedFeature included: the request was sent
                status, attempts = f"error: {exc.kind}", getattr(exc, "attempts", max(attempts, 1))
                if on_error is not None:
                    on_error(exc)
                raise
            finally:
                self._record(request, key, reply, stage, user_id, item_id, cached, attempts, reasks,
                             status, time.monotonic() - started, queued=sum(queued))
        return reply

    def score(self, request: ScoreRequest, *, stage: str, user_id: str | None = None,
              item_id: str | None = None) -> LabelScores:
        """Label log-probabilities per item (`ScoreRequest`): cached, retried and ledgered like a
        call. Raises `UnsupportedFeature` when the backend cannot score (no in-process model, or an
        endpoint without logprobs): the caller then asks for the labels as JSON instead."""
        scorer = getattr(self.backend, "score_labels", None)
        if scorer is None or not getattr(self.backend, "can_score", True):
            raise UnsupportedFeature(f"{self.backend.identity.backend} backend cannot score labels",
                                     feature="label_scores")
        # An endpoint found to return no logprobs is remembered in the request cache, so that a
        # new process (a restart after a crash, a later run) does not send the probe again.
        incapable = request_key(self.backend.identity, ChatRequest(messages=(), prompt_name="capability:no-logprobs"))
        if self.cache.get(incapable) is not None:
            raise UnsupportedFeature("endpoint returns no logprobs (remembered)", feature="logprobs")

        def call(req: ScoreRequest) -> ChatReply:
            scores = scorer(req)
            return ChatReply(text=scores.model_dump_json(), input_tokens=scores.input_tokens,
                             output_tokens=scores.output_tokens)

        def remember(exc: ModelCallError) -> None:
            if isinstance(exc, UnsupportedFeature) and exc.feature == "logprobs":
                self.cache.put(incapable, ChatReply(text="no logprobs"), self.backend.identity.backend,
                               self.backend.identity.model)
        reply = self._served(request, score_key(self.backend.identity, request), call, stage=stage,
                             user_id=user_id, item_id=item_id, on_error=remember)
        return LabelScores.model_validate_json(reply.text)

    def complete_many(self, requests: list[ChatRequest], *, stage: str, user_id: str | None = None,
                      item_ids: list[str] | None = None, return_errors: bool = False) -> list:
        """Several calls; cache misses go to the backend in one batch when it can batch
        (`complete_batch`). Everything not answered by that batch (cache hits, or all of them
        if the batch failed) goes through `complete`. Each call is cached and ledgered on its own.

        A batch may fail single items (a `ModelCallError` in its place, e.g. the provider Batch
        API after its re-queue): those are not retried here. They are raised (the first one)
        after every other item is cached, or, with `return_errors`, returned in their place so
        the caller fails those items only."""
        item_ids = item_ids or [None] * len(requests)
        fresh = self._batch_misses(requests, stage, user_id, item_ids)
        out = [fresh[i] if i in fresh else self.complete(r, stage=stage, user_id=user_id, item_id=item_ids[i])
               for i, r in enumerate(requests)]
        failed = [r for r in out if isinstance(r, ModelCallError)]
        if failed and not return_errors:
            raise failed[0]
        return out

    def _batch_misses(self, requests, stage, user_id, item_ids) -> dict[int, ChatReply | ModelCallError]:
        batch = getattr(self.backend, "complete_batch", None)
        keys = [request_key(self.backend.identity, r) for r in requests]
        missing = [i for i, k in enumerate(keys) if self.cache.get(k) is None]
        if batch is None or len(missing) < 2:
            return {}
        started = time.monotonic()
        try:
            with self.limiter.slot():
                queued = (time.monotonic() - started) / len(missing)
                replies = batch([requests[i] for i in missing])
        except ModelCallError:  # one by one instead, each with its own retries
            return {}
        share = (time.monotonic() - started) / len(missing)
        mode = getattr(self.backend, "ledger_mode", "sync")
        for i, reply in zip(missing, replies):
            if isinstance(reply, ModelCallError):
                self._record(requests[i], keys[i], None, stage, user_id, item_ids[i], False, 1, 0,
                             f"error: {reply.kind}", share, mode, queued=queued)
                continue
            self.cache.put(keys[i], reply, self.backend.identity.backend, self.backend.identity.model)
            self._record(requests[i], keys[i], reply, stage, user_id, item_ids[i], False, 1, 0, "ok", share, mode,
                         queued=queued)
        return dict(zip(missing, replies))

    def _record(self, request, key, reply, stage, user_id, item_id, cached, attempts, reasks, status, latency,
                mode="sync", queued=0.0):
        identity = self.backend.identity
        with self._count_lock:
            if cached:
                self.calls_cached += 1
            else:
                self.calls_made += 1
        tokens_in = reply.input_tokens if reply else 0
        tokens_out = reply.output_tokens if reply else 0
        self.ledger.record(LedgerRow(
            run_id=self.ledger.run_id, stage=stage, user_id=user_id, item_id=item_id,
            backend=identity.backend, model=identity.model, adapter=identity.adapter,
            prompt=f"{request.prompt_name}@{request.prompt_version}", request_key=key,
            input_tokens=tokens_in, output_tokens=tokens_out, cached=cached, attempts=attempts,
            reasks=reasks, status=status, latency_s=round(latency, 4), queued_s=round(queued, 4), ts=time.time(),
            mode=mode,
            cost_usd=0.0 if cached else self.llm.cost_usd(identity.model, tokens_in, tokens_out, mode == "batch")))

    def _reask_text(self, error: str) -> str:
        from tasks.resources import load_phrasing
        return load_phrasing().reask.format(error)

    def stats(self) -> dict:
        """Calls made / served from cache, and the first-try validity of structured replies."""
        with self._count_lock:
            items = self.structured_items
            return {"calls_made": self.calls_made, "calls_cached": self.calls_cached,
                    "structured_items": items,
                    "first_try_valid_rate": (self.structured_valid_first_try / items) if items else None}

    def structured(self, request: ChatRequest, parse: Callable[[str], T], *, stage: str,
                   user_id: str | None = None, item_id: str | None = None) -> T:
        """Call, parse; on a parse error re-ask with the error, up to `max_reasks` times.

        Exhausted: the raw text goes to the quarantine and `StructuredOutputError` is raised,
        so the caller fails that item only.
        """
        current, last_error, text = request, "", ""
        for reask in range(self.llm.max_reasks + 1):
            reply = self.complete(current, stage=stage, user_id=user_id, item_id=item_id, reasks=reask)
            text = reply.text
            try:
                value = parse(text)
                with self._count_lock:
                    self.structured_items += 1
                    self.structured_valid_first_try += int(reask == 0)
                return value
            except (ValueError, KeyError, TypeError) as exc:
                last_error = str(exc)[:500]
                current = current.model_copy(update={"messages": current.messages + (
                    Message(role="assistant", content=text),
                    Message(role="user", content=self._reask_text(last_error)))})
        with self._count_lock:
            self.structured_items += 1
        self.quarantine.add(stage=stage, user_id=user_id, item_id=item_id, prompt=request.prompt_name,
                            reason=last_error, raw_text=text, attempts=self.llm.max_reasks + 1)
        raise StructuredOutputError(f"{stage}: invalid output for {user_id or '-'}/{item_id or '-'} "
                                    f"after {self.llm.max_reasks + 1} tries: {last_error}", text,
                                    self.llm.max_reasks + 1)
