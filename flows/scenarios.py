"""Scenario-pool flow (GRAVITY section 3.3): one task run per seed statement."""
from __future__ import annotations

import time

from prefect import flow, unmapped

from gravity_core.pairs.scenarios import pool_version
from gravity_core.recipe import Recipe
from tasks.fanout import settle
from tasks.llm.factory import build_client
from tasks.profile_io import load_seeds
from tasks.scenarios import generate_scenarios, scenario_model_key, write_pool
from tasks.stage import RunContext, finish_stage, outcome


@flow(name="gravity-scenarios")
def scenarios_flow(recipe: Recipe, ctx: RunContext):
    started = time.time()
    cfg = recipe.scenarios
    seeds, bank = load_seeds(recipe.banks, recipe.run.seed)
    client = build_client(recipe.llm, "scenarios", ctx.run_dir, ctx.run_id)
    key = scenario_model_key(client)
    ids = [s.id for s in seeds]
    by_seed, failures = settle(ids, generate_scenarios.map(seeds, unmapped(cfg), unmapped(key), unmapped(client)))
    version = pool_version(ids, cfg.pairs_per_seed, key, bank)
    out = ctx.stage_dir("scenarios")
    written = write_pool(by_seed, version, client.backend.identity.model, cfg.pool_dir, out)
    finish_stage(ctx, "scenarios", started, artifacts={"pool": f"{out}/pool.parquet"},
                 rows={"scenario_pairs": written["scenario_pairs"], "seeds": written["seeds"], "ok": written["seeds"]},
                 clients=[client], failures=failures, notes={"pool_version": version, "shared_pool": written["shared"]})
    return outcome(failures, len(seeds), recipe.run.max_failed_fraction, "seed statements",
                   f"{written['scenario_pairs']} scenario pairs")
