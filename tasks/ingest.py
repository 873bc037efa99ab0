"""Prefect tasks of the ingest stage: Amazon files -> parquet (+ quarantine), then the cohort
(with countries inferred for the candidates first, where the recipe asks for it)."""
from __future__ import annotations

import json

import polars as pl
from prefect import task

from gravity_core.cohort import CohortConfig, candidates, genre_coverage, select_cohort, to_infer
from gravity_core.layout import RunLayout
from gravity_core.profile.assemble import build_user_inputs
from gravity_core.profile.config import ProfilesConfig
from gravity_core.profile.records import UserInput
from gravity_core.recipe import BanksConfig, DataConfig
from tasks.bank_io import load_genre_taxonomy
from tasks.caching import LLM_TASK
from tasks.ingest_io import IngestSummary, ingest_files
from tasks.llm.client import ModelClient
from tasks.profiles import infer_country
from tasks.resources import resolve_path
from tasks.rundir import write_parquet_atomic, write_text_atomic


@task(name="ingest", retries=0)
def ingest(data: DataConfig, banks: BanksConfig, layout: RunLayout) -> IngestSummary:
    """Read the review/meta/users files; write reviews, books, users, quarantine parquet."""
    taxonomy = load_genre_taxonomy(resolve_path(banks.genres))
    return ingest_files([resolve_path(p) for p in data.reviews], [resolve_path(p) for p in data.meta],
                        resolve_path(data.users) if data.users else None, layout.ingest_dir, taxonomy)


def _users(layout: RunLayout) -> pl.DataFrame | None:
    return pl.read_parquet(layout.users) if layout.users.exists() else None


@task(name="country-candidates")
def country_candidates(layout: RunLayout, cfg: CohortConfig) -> list[UserInput]:
    """The cohort candidates whose country the recipe wants inferred (none unless
    `cohort.country_source` asks for inferred countries and a country rule is configured)."""
    reviews, users = pl.scan_parquet(layout.reviews), _users(layout)
    cands = candidates(reviews, users, cfg)
    wanted = cands.filter(pl.col("user_id").is_in(to_infer(cands, cfg))).with_columns(
        pl.lit("unknown").alias("country_source"))
    if wanted.is_empty():
        return []
    return build_user_inputs(reviews.collect(), pl.read_parquet(layout.books), wanted, users)


def candidate_ids(users: list[UserInput]) -> list[str]:
    return [u.user_id for u in users]


@task(task_run_name="country-{user.user_id}", **LLM_TASK)
def infer_candidate_country(user: UserInput, options: list[str], cfg: ProfilesConfig, client: ModelClient) -> str | None:
    """One candidate's likely country among `options` (cached; None = other / no sign)."""
    try:
        return infer_country(user, options, cfg, client, "cohort.country")
    finally:
        client.ledger.flush()


@task(name="select-cohort")
def cohort(layout: RunLayout, cfg: CohortConfig, inferred: dict[str, str | None]) -> dict:
    """Users with enough reviews (+ country rules): cohort.parquet, the funnel and genre coverage."""
    reviews = pl.scan_parquet(layout.reviews)
    countries = pl.DataFrame({"user_id": list(inferred), "country": list(inferred.values())},
                             schema={"user_id": pl.String, "country": pl.String})
    picked = select_cohort(reviews, _users(layout), cfg, countries if inferred else None)
    coverage = genre_coverage(reviews, pl.scan_parquet(layout.books))
    write_parquet_atomic(picked.cohort, layout.cohort)
    write_parquet_atomic(picked.funnel, layout.cohort_funnel)
    write_text_atomic(layout.genre_coverage, json.dumps(coverage, indent=2))
    return {"users": picked.cohort.height, "funnel": picked.funnel.to_dicts(), "warning": picked.warning,
            "genre_coverage": coverage, "countries": {c or "country unknown": n for c, n in picked.cohort.group_by("country").len()
                                                          .sort("country").iter_rows()}}


def ingest_rows(summary: IngestSummary, chosen: dict) -> dict[str, int]:
    return {"reviews": summary.reviews.ingested, "reviews_quarantined": summary.reviews.quarantined,
            "books": summary.books.ingested, "books_quarantined": summary.books.quarantined,
            "cohort_users": chosen["users"]}


def warnings_of(chosen: dict) -> list[str]:
    return [chosen["warning"]] if chosen["warning"] else []
