"""Ingest flow: Amazon Reviews 2023 files -> parquet + quarantine -> (inferred countries) -> cohort
(appendix A)."""
from __future__ import annotations

from prefect import flow, unmapped

from gravity_core.recipe import Recipe
from tasks.fanout import settle
from tasks.ingest import (
    candidate_ids, cohort, country_candidates, infer_candidate_country, ingest, ingest_rows, warnings_of,
)
from tasks.profile_io import country_options
from tasks.stage import RunContext, StageResult, client_for, gravity_stage


@flow(name="gravity-ingest")
@gravity_stage("ingest")
def ingest_flow(recipe: Recipe, ctx: RunContext) -> StageResult:
    layout = ctx.layout
    summary = ingest(recipe.data, recipe.banks, layout)
    unknown = country_candidates(layout, recipe.cohort)
    client = client_for(recipe.llm, "profile", ctx) if unknown else None
    inferred, failures = settle(candidate_ids(unknown), infer_candidate_country.map(
        unknown, unmapped(country_options(recipe)), unmapped(recipe.profiles), unmapped(client)), stage="ingest")
    chosen = cohort(layout, recipe.cohort, inferred)
    return StageResult(done=f"{chosen['users']} cohort users", what="country inferences", total=len(unknown),
                       artifacts={**summary.outputs, "cohort": layout.cohort, "cohort_funnel": layout.cohort_funnel,
                                  "genre_coverage": layout.genre_coverage},
                       rows=ingest_rows(summary, chosen), failures=failures, clients=[client] if client else [],
                       notes={"cohort_funnel": chosen["funnel"], "genre_coverage": chosen["genre_coverage"],
                              "countries": chosen["countries"], "counts": summary.model_dump(mode="json")},
                       warnings=warnings_of(chosen), value=chosen)
