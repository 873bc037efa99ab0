"""Cost ledger: one row per logical model call, appended to RUN_DIR/ledger.parquet.

`mode` says how a call was made: "sync" (one request to the endpoint, or a local batch) or
"batch" (the provider Batch API, priced at `LLMConfig.batch_discount`).
"""
from __future__ import annotations

import threading
from pathlib import Path

import polars as pl
from pydantic import BaseModel

from tasks.rundir import append_parquet

LEDGER_FILE = "ledger.parquet"
LEDGER_SCHEMA = {
    "run_id": pl.String, "stage": pl.String, "user_id": pl.String, "item_id": pl.String,
    "backend": pl.String, "model": pl.String, "adapter": pl.String, "prompt": pl.String,
    "request_key": pl.String, "input_tokens": pl.Int64, "output_tokens": pl.Int64,
    "cached": pl.Boolean, "attempts": pl.Int64, "reasks": pl.Int64,
    "status": pl.String, "latency_s": pl.Float64, "cost_usd": pl.Float64, "ts": pl.Float64,
    "mode": pl.String,
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
    latency_s: float = 0.0
    cost_usd: float = 0.0
    ts: float = 0.0
    mode: str = "sync"


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
        """Append pending rows to RUN_DIR/ledger.parquet; returns rows written."""
        rows = self.take()
        if rows and self.run_dir is not None:
            append_rows(self.run_dir, rows)
        return len(rows)


def rows_frame(rows: list[LedgerRow]) -> pl.DataFrame:
    return pl.DataFrame([r.model_dump() for r in rows], schema=LEDGER_SCHEMA)


def append_rows(run_dir: Path, rows: list[LedgerRow]) -> None:
    """Append under the run's file lock (see tasks.rundir.append_parquet)."""
    append_parquet(rows_frame(rows), Path(run_dir) / LEDGER_FILE)


def read_ledger(run_dir: Path) -> pl.DataFrame:
    target = Path(run_dir) / LEDGER_FILE
    return pl.read_parquet(target) if target.exists() else pl.DataFrame(schema=LEDGER_SCHEMA)
