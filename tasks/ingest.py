"""Prefect tasks of the ingest stage: Amazon files -> parquet (+ quarantine), then the cohort."""
from __future__ import annotations

from pathlib import Path

import polars as pl
from prefect import task

from gravity_core.cohort import CohortConfig, cohort_funnel, select_cohort
from gravity_core.recipe import BanksConfig, DataConfig
from tasks.bank_io import load_genre_taxonomy
from tasks.ingest_io import IngestSummary, ingest_files
from tasks.resources import resolve_path
from tasks.rundir import write_parquet_atomic


@task(name="ingest", retries=0)
def ingest(data: DataConfig, banks: BanksConfig, out_dir: str) -> IngestSummary:
    """Read the review/meta/users files; write reviews, books, users, quarantine parquet."""
    taxonomy = load_genre_taxonomy(resolve_path(banks.genres))
    return ingest_files([resolve_path(p) for p in data.reviews], [resolve_path(p) for p in data.meta],
                        resolve_path(data.users) if data.users else None, Path(out_dir), taxonomy)


@task(name="select-cohort")
def cohort(ingest_dir: str, cfg: CohortConfig, out_dir: str) -> dict:
    """Users with enough reviews (+ per-country sampling): cohort.parquet and the funnel."""
    reviews = pl.scan_parquet(Path(ingest_dir) / "reviews.parquet")
    users_path = Path(ingest_dir) / "users.parquet"
    users = pl.read_parquet(users_path) if users_path.exists() else None
    selected = select_cohort(reviews, users, cfg)
    funnel = cohort_funnel(reviews, users, cfg)
    write_parquet_atomic(selected, Path(out_dir) / "cohort.parquet")
    write_parquet_atomic(funnel, Path(out_dir) / "cohort_funnel.parquet")
    return {"users": selected.height, "funnel": funnel.to_dicts()}
