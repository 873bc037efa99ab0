"""The run's one target set (GRAVITY section 3.5): K books per user, shared by every method."""
from __future__ import annotations

import polars as pl
from prefect import task

from gravity_core.evaluation.config import EvaluateConfig
from gravity_core.generate import select_targets
from gravity_core.layout import RunLayout
from gravity_core.profile.assemble import interests_frame
from tasks.records_io import read_profiles
from tasks.rundir import write_parquet_atomic

TARGET_SCHEMA = {"user_id": pl.String, "parent_asin": pl.String, "title": pl.String, "description": pl.String,
                 "genre": pl.String}


@task(name="select-targets")
def write_targets(layout: RunLayout, cfg: EvaluateConfig) -> dict[str, int]:
    """RUN_DIR/evaluate/targets.parquet: user_id, parent_asin, title, description, genre; K highly
    rated books per user from their top genres, never reviewed by them."""
    profiles = read_profiles(layout)
    chosen = select_targets(pl.scan_parquet(layout.books), interests_frame(profiles).lazy(),
                            pl.scan_parquet(layout.reviews).select("user_id", "parent_asin"),
                            cfg.books_per_user, cfg.min_book_rating)
    write_parquet_atomic(chosen.select([pl.col(c).cast(t) for c, t in TARGET_SCHEMA.items()]), layout.targets)
    missing = sorted({p.user_id for p in profiles} - set(chosen["user_id"]))
    return {"targets": chosen.height, "users": chosen["user_id"].n_unique(), "users_without_targets": len(missing)}


def read_targets(layout: RunLayout) -> pl.DataFrame:
    """The run's target set (columns of TARGET_SCHEMA); the `targets` stage writes it."""
    if not layout.targets.exists():
        raise FileNotFoundError(f"{layout.targets} not found: run the targets stage first")
    frame = pl.read_parquet(layout.targets)
    wrong = [c for c, t in TARGET_SCHEMA.items() if frame.schema.get(c) != t]
    if wrong:
        raise ValueError(f"{layout.targets}: columns {wrong} missing or of the wrong type; re-run the targets stage")
    return frame.select(list(TARGET_SCHEMA))


def targets_by_user(layout: RunLayout) -> dict[str, list[dict]]:
    """The target books of each user (title, description, genre, parent_asin), in the file's order."""
    return {u: frame.drop("user_id").to_dicts()
            for (u,), frame in read_targets(layout).group_by("user_id", maintain_order=True)}
