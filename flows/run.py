"""`gravity run`: the whole pipeline as one flow of subflows (paper Figure 1)."""
from __future__ import annotations

from prefect import flow

from flows.ingest import ingest_flow
from flows.profiles import profiles_flow
from gravity_core.recipe import Recipe
from tasks.stage import RunContext


@flow(name="gravity-run")
def gravity_run(recipe: Recipe, ctx: RunContext):
    ingest_flow(recipe, ctx)
    return profiles_flow(recipe, ctx, return_state=True)
