"""Scenario-pool flow (GRAVITY section 3.3): one task run per seed statement."""
from __future__ import annotations

from prefect import flow, unmapped

from gravity_core.recipe import Recipe
from tasks.fanout import settle
from tasks.profile_io import load_seeds
from tasks.scenarios import generate_scenarios, seed_ids, write_pool
from tasks.stage import RunContext, StageResult, client_for, gravity_stage


@flow(name="gravity-scenarios")
@gravity_stage("scenarios")
def scenarios_flow(recipe: Recipe, ctx: RunContext) -> StageResult:
    cfg = recipe.scenarios
    seeds, bank = load_seeds(recipe.banks, recipe.run.seed)
    client = client_for(recipe.llm, "scenarios", ctx)
    by_seed, failures = settle(seed_ids(seeds), generate_scenarios.map(seeds, unmapped(cfg), unmapped(client)),
                               stage="scenarios")
    written = write_pool(by_seed, seeds, bank, cfg, client, ctx.layout)
    return StageResult(done=f"{written['scenario_pairs']} scenario pairs", what="seed statements", total=len(seeds),
                       artifacts={"pool": ctx.layout.pool}, failures=failures, clients=[client],
                       rows={"scenario_pairs": written["scenario_pairs"], "seeds": written["seeds"]},
                       notes={"pool_version": written["pool_version"], "shared_pool": written["shared"]})
