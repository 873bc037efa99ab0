"""Provider Batch API for OpenAI-style endpoints (`llm.steps.<step>.batch: true`).

`BatchAPIBackend` is an `OpenAIBackend` whose `complete_batch` (used by
`ModelClient.complete_many` for its cache misses) goes through the Batch API: the requests
are written as JSONL (custom_id = the request key, body = the same body a single call sends),
uploaded with `files.create(purpose="batch")`, submitted with `batches.create`, polled with a
growing, capped interval until a terminal status, and the output and error files are matched
back by custom_id.

Resume: the batch id is written (atomically, before the first poll) to
`<cache_dir>/batches/<sha256 of the sorted custom ids>.json`; a restarted run with the same
cache misses finds it and polls that batch instead of submitting a new one. The files are
removed once the results are handed back (and on a batch that failed as a whole), so a
deliberate re-run submits afresh.

Failures: items in the error file or with a retryable non-200 response are re-queued once,
in a second batch holding only them; what still fails (and non-retryable 4xx answers, at
once) comes back as a `ModelCallError` in that item's place, so the caller fails that item
only. A first batch that fails as a whole (status failed/cancelled, or the upload is
refused) raises, and `ModelClient.complete_many` falls back to single calls.

Single calls (`complete`, hence `structured` and its re-asks) use the normal endpoint at list
price: a re-ask depends on the previous answer, and a one-line batch may take up to 24 h.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable

import openai
from openai.types.chat import ChatCompletion
from pydantic import SecretStr

from gravity_core.llm import ChatReply, ChatRequest, ModelCallError, backoff_seconds, classify_status, request_key
from gravity_core.llm_config import BackendConfig
from tasks.llm.openai_backend import OpenAIBackend, reply_from_completion, to_model_error

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
TERMINAL = frozenset({"completed", "expired", "failed", "cancelled"})
Result = ChatReply | ModelCallError


def batch_lines(bodies: dict[str, dict]) -> bytes:
    """The JSONL input file: one {custom_id, method, url, body} line per request, by custom_id."""
    lines = (json.dumps({"custom_id": cid, "method": "POST", "url": ENDPOINT, "body": bodies[cid]},
                        ensure_ascii=False, separators=(",", ":")) for cid in sorted(bodies))
    return ("\n".join(lines) + "\n").encode("utf-8")


def state_key(custom_ids) -> str:
    """What a batch is filed under: a hash of its sorted custom ids."""
    return hashlib.sha256("\n".join(sorted(custom_ids)).encode()).hexdigest()[:32]


def line_result(row: dict) -> Result:
    """One output/error-file line as a reply, or as the item's error (retryable = worth re-queuing)."""
    response, error = row.get("response") or {}, row.get("error") or {}
    status = response.get("status_code")
    if status == 200 and not error:
        try:
            return reply_from_completion(ChatCompletion.model_validate(response.get("body")))
        except (ValueError, IndexError) as exc:
            return ModelCallError(f"unreadable completion: {str(exc)[:200]}", retryable=False, kind="batch_unreadable")
    if status is not None:
        detail = (response.get("body") or {}).get("error") or {}
        retryable, message = classify_status(status, detail.get("code") or detail.get("type"))
        return ModelCallError(f"{message}; {detail.get('message', '')}".strip("; "), retryable=retryable,
                              status=status, kind=f"http_{status}")
    code = error.get("code") or "failed"
    return ModelCallError(f"batch item failed: {code}: {error.get('message', '')}", retryable=True,
                          kind=f"batch_{code}")


def read_results(texts: list[str]) -> dict[str, Result]:
    """Output and error files (JSONL, any order) -> result by custom_id."""
    results: dict[str, Result] = {}
    for text in texts:
        for line in filter(str.strip, text.splitlines()):
            row = json.loads(line)
            results[row["custom_id"]] = line_result(row)
    return results


class BatchState:
    """Submitted batches, one small JSON file each under `folder`, written atomically."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self._path(key)
        return json.loads(path.read_text()) if path.exists() else None

    def put(self, key: str, record: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{key}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "w") as handle:
            json.dump(record, handle)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self._path(key))

    def drop(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class BatchAPIBackend(OpenAIBackend):
    """`OpenAIBackend` whose batched calls go through the provider Batch API (ledger mode "batch").

    Same identity as the plain backend, so replies share the request cache either way."""

    ledger_mode = "batch"

    def __init__(self, cfg: BackendConfig, api_key: SecretStr, state_dir: Path, http_client=None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        super().__init__(cfg, api_key, http_client=http_client)
        self.state = BatchState(state_dir)
        self._sleep = sleep
        self._clock = clock

    def complete_batch(self, requests: list[ChatRequest]) -> list[Result]:
        """Replies in request order; an item that failed twice (or for good) is its `ModelCallError`."""
        bodies = {request_key(self.identity, r): self.request_body(r) for r in requests}
        results = self._round(bodies, 1)
        again = {cid: bodies[cid] for cid, r in results.items() if isinstance(r, ModelCallError) and r.retryable}
        if again:
            results.update(self._second_round(again))
            self.state.drop(state_key(again))
        self.state.drop(state_key(bodies))
        return [_final(cid, results[cid]) for cid in (request_key(self.identity, r) for r in requests)]

    def _second_round(self, bodies: dict[str, dict]) -> dict[str, Result]:
        """The re-queue: a failure of the whole batch now fails only its items (the first
        batch's answers are kept)."""
        try:
            return self._round(bodies, 2)
        except ModelCallError as exc:
            return {cid: exc for cid in bodies}

    def _round(self, bodies: dict[str, dict], round_no: int) -> dict[str, Result]:
        key = state_key(bodies)
        batch = self._wait(self._batch_id(key, bodies, round_no))
        if batch.status in ("failed", "cancelled"):
            self.state.drop(key)
            reasons = "; ".join(e.message or e.code or "" for e in (batch.errors.data or [])) if batch.errors else ""
            raise ModelCallError(f"batch {batch.id} {batch.status}: {reasons or 'no reason given'}",
                                 retryable=False, kind=f"batch_{batch.status}")
        found = read_results([self._call("download", self._client.files.content, fid).text
                              for fid in (batch.output_file_id, batch.error_file_id) if fid])
        missing = ModelCallError(f"no result in batch {batch.id} ({batch.status})", retryable=True,
                                 kind="batch_missing")
        return {cid: found.get(cid, missing) for cid in bodies}

    def _batch_id(self, key: str, bodies: dict[str, dict], round_no: int) -> str:
        """The batch filed under `key` at this endpoint, else a new one, filed before any poll."""
        record = self.state.get(key)
        if record is not None and record.get("endpoint") == self._endpoint():
            log.info("resuming batch %s (%d requests)", record["batch_id"], len(bodies))
            return record["batch_id"]
        batch_id = self._submit(bodies)
        self.state.put(key, {"batch_id": batch_id, "round": round_no, "endpoint": self._endpoint(),
                             "model": self.cfg.model, "requests": len(bodies), "submitted_at": time.time()})
        return batch_id

    def _endpoint(self) -> str:
        return self.cfg.base_url or "https://api.openai.com/v1"

    def _submit(self, bodies: dict[str, dict]) -> str:
        upload = self._call("upload", self._client.files.create, purpose="batch",
                            file=("gravity-batch.jsonl", batch_lines(bodies), "application/jsonl"))
        batch = self._call("create", self._client.batches.create, input_file_id=upload.id, endpoint=ENDPOINT,
                           completion_window="24h")
        log.info("submitted batch %s (%d requests)", batch.id, len(bodies))
        return batch.id

    def _wait(self, batch_id: str):
        """Poll until a terminal status, waiting `batch_poll.interval(n)` after poll n."""
        started = self._clock()
        for polls in itertools.count():
            batch = self._call("poll", self._client.batches.retrieve, batch_id)
            if batch.status in TERMINAL:
                return batch
            counts = batch.request_counts
            log.info("batch %s %s (%s/%s done) after %.0f s", batch_id, batch.status,
                     counts.completed if counts else "?", counts.total if counts else "?", self._clock() - started)
            self._sleep(self.cfg.batch_poll.interval(polls))

    def _call(self, what: str, fn, *args, **kwargs):
        """One SDK call of the batch protocol, retried on transient errors like any model call."""
        retry = self.cfg.retry
        for attempt in range(1, retry.max_attempts + 1):
            try:
                return fn(*args, **kwargs)
            except openai.OpenAIError as exc:
                error = to_model_error(exc)
                if not error.retryable or attempt == retry.max_attempts:
                    raise ModelCallError(f"batch {what}: {error} (after {attempt} attempt(s))", retryable=False,
                                         status=error.status, kind=error.kind) from None
                self._sleep(backoff_seconds(attempt, retry.backoff_base_s, retry.backoff_cap_s, 0.0,
                                            error.retry_after_s))
        raise AssertionError("unreachable")


def _final(custom_id: str, result: Result) -> Result:
    """After the re-queue an error is final: say which item, never retry it."""
    if not isinstance(result, ModelCallError):
        return result
    return ModelCallError(f"batch item {custom_id[:12]}: {result}", retryable=False, status=result.status,
                          kind=result.kind)
