"""Stage bookkeeping: the run context, timing, and the manifest record of each stage."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from gravity_core.manifest import StageRecord
from gravity_core.recipe import Recipe
from tasks.llm.client import ModelClient
from tasks.rundir import record_stage, write_parquet_atomic


class RunContext(BaseModel):
    """Where a run writes and how it is identified (not part of any task cache key)."""

    run_dir: str
    run_id: str
    recipe_name: str
    recipe_hash: str

    def stage_dir(self, stage: str) -> str:
        path = Path(self.run_dir) / stage
        path.mkdir(parents=True, exist_ok=True)
        return str(path)


def recipe_hash(recipe: Recipe) -> str:
    return hashlib.sha256(recipe.model_dump_json().encode()).hexdigest()[:12]


def relative(ctx: RunContext, paths: dict[str, str | Path]) -> dict[str, str]:
    return {k: str(Path(v).resolve().relative_to(Path(ctx.run_dir).resolve())) for k, v in paths.items()}


def model_calls(clients: list[ModelClient]) -> dict[str, int]:
    stats = [c.stats() for c in clients]
    return {"made": sum(s["calls_made"] for s in stats), "cached": sum(s["calls_cached"] for s in stats)}


@task(name="record-stage", cache_policy=NO_CACHE)
def finish_stage(ctx: RunContext, stage: str, started: float, artifacts: dict[str, str], rows: dict[str, int],
                 clients: list[ModelClient] | None = None, failures: dict[str, str] | None = None,
                 notes: dict | None = None) -> StageRecord:
    """Write the stage's manifest record; flush ledgers and model-output quarantine."""
    clients = clients or []
    quarantined = [row for c in clients for row in c.quarantine.take()]
    for client in clients:
        client.ledger.flush()
    if quarantined:
        import polars as pl
        path = Path(ctx.run_dir) / "quarantine" / f"{stage}_model_outputs.parquet"
        write_parquet_atomic(pl.DataFrame(quarantined), path)
        artifacts = {**artifacts, "model_quarantine": str(path)}
    failures = failures or {}
    status = "completed" if not failures else ("partial" if rows.get("ok", 1) else "failed")
    record = StageRecord(status=status, seconds=round(time.time() - started, 2), artifacts=relative(ctx, artifacts),
                         rows=rows, model_calls=model_calls(clients),
                         failures=[{"item": k, "reason": v} for k, v in failures.items()],
                         notes={**(notes or {}), **_validity(clients)})
    record_stage(Path(ctx.run_dir), ctx.run_id, ctx.recipe_name, ctx.recipe_hash, stage, record)
    return record


def _validity(clients: list[ModelClient]) -> dict:
    stats = [c.stats() for c in clients if c.stats()["structured_items"]]
    if not stats:
        return {}
    items = sum(s["structured_items"] for s in stats)
    valid = sum(s["first_try_valid_rate"] * s["structured_items"] for s in stats)
    return {"structured_items": items, "first_try_valid_rate": round(valid / items, 4)}


def outcome(failures: dict[str, str], total: int, tolerance: float, what: str, done: str):
    """Completed when the failed share is within the recipe's tolerance, else Failed; the
    message always carries the failure count (never a silent Completed)."""
    from prefect.states import Completed, Failed
    if not failures:
        return Completed(message=done)
    message = f"{len(failures)} of {total} {what} failed"
    if len(failures) <= tolerance * total:
        return Completed(message=f"{done}; {message} (within run.max_failed_fraction={tolerance})")
    return Failed(message=f"{message}; see the manifest")


def worst(*states):
    """The first non-completed state (partial stages make the run non-successful), else the last."""
    return next((s for s in states if not s.is_completed()), states[-1])
