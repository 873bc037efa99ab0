"""`gravity run`: the whole pipeline as one flow of subflows (paper Figure 1)."""
from __future__ import annotations

from prefect import flow

from flows.generate import generate_flow
from flows.ingest import ingest_flow
from flows.pairs import pairs_flow
from flows.profiles import profiles_flow
from flows.scenarios import scenarios_flow
from flows.train import train_flow
from gravity_core.recipe import Recipe
from tasks.stage import RunContext, worst


@flow(name="gravity-run")
def gravity_run(recipe: Recipe, ctx: RunContext):
    ingest_flow(recipe, ctx)
    profiles = profiles_flow(recipe, ctx, return_state=True)
    scenarios = scenarios_flow(recipe, ctx, return_state=True)
    pairs_flow(recipe, ctx)
    trained = train_flow(recipe, ctx)
    generated = generate_flow(recipe, ctx, adapter=trained["adapter"], return_state=True)
    return worst(profiles, scenarios, generated)
