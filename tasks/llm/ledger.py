"""Cost ledger: one row per logical model call, in RUN_DIR/ledger.parquet.

A flush writes its rows as a new file in RUN_DIR/ledger.parts/ (cost: its own rows; no lock, no
rewrite), and `compact` merges the parts into ledger.parquet when a stage ends. Appending to one
parquet rewrote the whole file under a lock at every flush: quadratic in the run's calls, and at
400 users the flushing tasks spent 27 s waiting for that lock. `read_ledger` reads both.

`mode` says how a call was made: "sync" (one request to the endpoint, or a local batch) or
"batch" (the provider Batch API, priced at `LLMConfig.batch_discount`).
"""
from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import polars as pl
from pydantic import BaseModel

from gravity_core.layout import RunLayout
from tasks.rundir import file_lock, write_parquet_atomic

LEDGER_SCHEMA = {
    "run_id": pl.String, "stage": pl.String, "user_id": pl.String, "item_id": pl.String,
    "backend": pl.String, "model": pl.String, "adapter": pl.String, "prompt": pl.String,
    "request_key": pl.String, "input_tokens": pl.Int64, "output_tokens": pl.Int64,
    "cached": pl.Boolean, "attempts": pl.Int64, "reasks": pl.Int64,
    "status": pl.String, "latency_s": pl.Float64, "queued_s": pl.Float64, "cost_usd": pl.Float64, "ts": pl.Float64,
    "mode": pl.String, "flush_id": pl.String,
}


class LedgerRow(BaseModel):
    """One logical call (a cache hit counts, with cached=True and attempts=0)."""

    run_id: str
    stage: str
    user_id: str | None = None
    item_id: str | None = None
    backend: str
    model: str
    adapter: str | None = None
    prompt: str
    request_key: str
    input_tokens: int = 0
    output_tokens: int = 0
    cached: bool = False
    attempts: int = 0
    reasks: int = 0
    status: str = "ok"
    latency_s: float = 0.0  # the logical call's wall time: queued_s, then requests, retries and back-off
    queued_s: float = 0.0  # of latency_s, waiting for a limiter slot or for an identical request in flight
    cost_usd: float = 0.0
    ts: float = 0.0
    mode: str = "sync"
    flush_id: str | None = None  # the part file it was flushed in (compaction is idempotent by it)


class Ledger:
    """Collects rows in memory (thread-safe); `flush` appends them to the run's parquet."""

    def __init__(self, run_dir: Path | None, run_id: str):
        self.run_dir = Path(run_dir) if run_dir else None
        self.run_id = run_id
        self._rows: list[LedgerRow] = []
        self._lock = threading.Lock()

    def record(self, row: LedgerRow) -> None:
        with self._lock:
            self._rows.append(row)

    def take(self) -> list[LedgerRow]:
        with self._lock:
            rows, self._rows = self._rows, []
        return rows

    def flush(self) -> int:
        """Write pending rows as a new part in RUN_DIR/ledger.parts/ (merged into ledger.parquet when
        the stage ends, see `compact`); returns rows written."""
        rows = self.take()
        if rows and self.run_dir is not None:
            append_rows(self.run_dir, rows)
        return len(rows)


def rows_frame(rows: list[LedgerRow], flush_id: str | None = None) -> pl.DataFrame:
    frame = pl.DataFrame([r.model_dump() for r in rows], schema=LEDGER_SCHEMA)
    return frame.with_columns(flush_id=pl.lit(flush_id, pl.String)) if flush_id else frame


def append_rows(run_dir: Path, rows: list[LedgerRow]) -> Path:
    """Write `rows` as a new part (named by time, so parts read in flush order); returns it."""
    flush_id = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
    path = RunLayout.of(run_dir).ledger_parts / f"{flush_id}.parquet"
    write_parquet_atomic(rows_frame(rows, flush_id), path)
    return path


def _parts(layout: RunLayout) -> list[Path]:
    return sorted(layout.ledger_parts.glob("*.parquet")) if layout.ledger_parts.is_dir() else []


def _merged(layout: RunLayout, parts: list[Path]) -> pl.DataFrame:
    """ledger.parquet and the parts not merged into it yet (a compaction killed after writing
    ledger.parquet and before deleting its parts leaves parts that are already in it)."""
    frames = [pl.read_parquet(layout.ledger)] if layout.ledger.exists() else []
    merged = set(frames[0]["flush_id"].drop_nulls()) if frames and "flush_id" in frames[0].columns else set()
    frames += [pl.read_parquet(p) for p in parts if p.stem not in merged]
    if not frames:
        return pl.DataFrame(schema=LEDGER_SCHEMA)
    frame = pl.concat(frames, how="diagonal_relaxed")  # older files may lack newer columns: null there
    return frame.with_columns(pl.lit(None, dtype).alias(name) for name, dtype in LEDGER_SCHEMA.items()
                              if name not in frame.columns)


def compact(run_dir: Path) -> int:
    """Merge the flushed parts into RUN_DIR/ledger.parquet (atomically, under the ledger lock),
    then delete them; returns the rows merged in. Called when a stage ends."""
    layout = RunLayout.of(run_dir)
    with file_lock(layout.ledger_lock):
        parts = _parts(layout)
        if not parts:
            return 0
        before = pl.scan_parquet(layout.ledger).select(pl.len()).collect().item() if layout.ledger.exists() else 0
        frame = _merged(layout, parts)
        write_parquet_atomic(frame, layout.ledger)
        for part in parts:
            part.unlink(missing_ok=True)
    return frame.height - before


def read_ledger(run_dir: Path) -> pl.DataFrame:
    """Every row of the run's ledger: ledger.parquet and the parts flushed since it was compacted
    (under the ledger lock: a compaction deletes the parts it merged)."""
    layout = RunLayout.of(run_dir)
    if not layout.root.is_dir():
        return pl.DataFrame(schema=LEDGER_SCHEMA)
    with file_lock(layout.ledger_lock):
        return _merged(layout, _parts(layout))
