"""The one stage wrapper: timing, the manifest record, ledger and quarantine flushes, progress
and the outcome. A stage flow returns a `StageResult`; `gravity_stage` does the rest, so a new
stage cannot forget any of it. A stage whose failed share exceeds `run.max_failed_fraction`
ends Failed, which stops the pipeline before the next stage spends a call.
"""
from __future__ import annotations

import functools
from collections import Counter
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from pydantic import BaseModel

from gravity_core.layout import RunLayout
from gravity_core.manifest import StageRecord
from gravity_core.recipe import Recipe
from tasks.llm.factory import release_local_models
from tasks.llm.ledger import compact as compact_ledger
from tasks.progress import BOARD, CURRENT_STAGE
from tasks.rundir import record_stage, write_parquet_atomic


class RunContext(BaseModel):
    """Where a run writes and how it is identified (never part of a task cache key)."""

    run_dir: str
    run_id: str
    recipe_name: str
    recipe_hash: str

    @property
    def layout(self) -> RunLayout:
        return RunLayout.of(self.run_dir)


@dataclass
class StageResult:
    """What a stage flow hands to the wrapper."""

    done: str = ""
    what: str = "items"
    total: int = 0
    artifacts: dict[str, str | Path] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    clients: list = field(default_factory=list)
    notes: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    value: object = None


def gravity_stage(name: str):
    """Decorator for a stage flow body `(recipe, ctx, ...) -> StageResult`; returns the flow's
    final state (Completed, or Failed with the reason) and records the stage in the manifest."""
    def decorate(body):
        @functools.wraps(body)
        def run(recipe: Recipe, ctx: RunContext, *args, **kwargs):
            token, started = CURRENT_STAGE.set(name), time.time()
            BOARD.start(name)
            try:
                result = body(recipe, ctx, *args, **kwargs)
            except Exception as exc:
                _crashed(ctx, name, started, exc)
                raise
            finally:
                CURRENT_STAGE.reset(token)
                release_local_models()
            return close_stage(ctx, name, started, result, recipe.run.max_failed_fraction)
        return run
    return decorate


def _crashed(ctx: RunContext, name: str, started: float, exc: Exception) -> None:
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
    record = StageRecord(status="failed", seconds=round(time.time() - started, 2), notes={"error": reason})
    record_stage(ctx.layout, ctx.run_id, ctx.recipe_name, ctx.recipe_hash, name, record)
    BOARD.finish(name, "failed", reason=reason)


def close_stage(ctx: RunContext, name: str, started: float, result: StageResult, tolerance: float):
    """Flush ledgers and the model-output quarantine, write the manifest record, report progress,
    and return the stage's final state."""
    from prefect.states import Completed, Failed
    artifacts = {k: str(v) for k, v in result.artifacts.items()}
    quarantine = _flush(ctx.layout, name, result.clients)
    if quarantine is not None:
        artifacts["model_quarantine"] = str(quarantine)
    failed = len(result.failures) > tolerance * max(result.total, 1)
    status = "failed" if failed else ("partial" if result.failures else "completed")
    record = StageRecord(status=status, seconds=round(time.time() - started, 2),
                         artifacts={k: ctx.layout.relative(v) for k, v in artifacts.items()}, rows=result.rows,
                         model_calls=model_calls(result.clients),
                         failures=[{"item": k, "reason": v} for k, v in result.failures.items()],
                         notes={**result.notes, **_validity(result.clients),
                                **({"warnings": result.warnings} if result.warnings else {})})
    record_stage(ctx.layout, ctx.run_id, ctx.recipe_name, ctx.recipe_hash, name, record)
    message = _message(name, result, tolerance, failed)
    BOARD.finish(name, status, failures=result.failures, quarantine=quarantine, message=message,
                 warnings=result.warnings)
    return Failed(message=message) if failed else Completed(message=message, data=result.value)


def _message(name: str, result: StageResult, tolerance: float, failed: bool) -> str:
    if not result.failures:
        return result.done
    share = f"{len(result.failures)} of {result.total} {result.what} failed"
    if failed:
        reasons = Counter(" ".join(r.split())[:200] for r in result.failures.values())
        reason, count = reasons.most_common(1)[0]
        why = f"{'all' if count == len(result.failures) else count} with: {reason}"
        return f"stage {name}: {share} ({why}), more than run.max_failed_fraction={tolerance}; see the manifest"
    return f"{result.done}; {share} (within run.max_failed_fraction={tolerance})"


def _flush(layout: RunLayout, stage: str, clients: list) -> Path | None:
    """Ledger rows to RUN_DIR/ledger.parquet; invalid model outputs to the stage's quarantine file."""
    rows = [row for c in clients for row in c.quarantine.take()]
    for client in clients:
        client.ledger.flush()
    compact_ledger(layout.root)
    if not rows:
        return None
    path = layout.model_quarantine(stage)
    write_parquet_atomic(pl.DataFrame(rows), path)
    return path


def client_for(llm, step: str, ctx: RunContext):
    """The model client of one step for this run, reporting its calls to the current stage's progress."""
    from tasks.llm.factory import build_client
    client = build_client(llm, step, ctx.run_dir, ctx.run_id)
    BOARD.attach(CURRENT_STAGE.get(), client)
    return client


def model_calls(clients: list) -> dict[str, int]:
    stats = [c.stats() for c in clients]
    return {"made": sum(s["calls_made"] for s in stats), "cached": sum(s["calls_cached"] for s in stats)}


def _validity(clients: list) -> dict:
    stats = [s for s in (c.stats() for c in clients) if s["structured_items"]]
    if not stats:
        return {}
    items = sum(s["structured_items"] for s in stats)
    valid = sum(s["first_try_valid_rate"] * s["structured_items"] for s in stats)
    return {"structured_items": items, "first_try_valid_rate": round(valid / items, 4)}
