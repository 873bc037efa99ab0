"""Ingest flow: Amazon Reviews 2023 files -> parquet + quarantine -> cohort (appendix A)."""
from __future__ import annotations

import time

from prefect import flow

from gravity_core.recipe import Recipe
from tasks.ingest import cohort, ingest
from tasks.stage import RunContext, finish_stage


@flow(name="gravity-ingest")
def ingest_flow(recipe: Recipe, ctx: RunContext) -> dict:
    started = time.time()
    out = ctx.stage_dir("ingest")
    summary = ingest(recipe.data, recipe.banks, out)
    chosen = cohort(out, recipe.cohort, out)
    finish_stage(ctx, "ingest", started, artifacts={k: str(v) for k, v in summary.outputs.items()},
                 rows={"reviews": summary.reviews.ingested, "reviews_quarantined": summary.reviews.quarantined,
                       "books": summary.books.ingested, "books_quarantined": summary.books.quarantined,
                       "cohort_users": chosen["users"]},
                 notes={"cohort_funnel": chosen["funnel"]})
    return {"summary": summary, "cohort": chosen}
