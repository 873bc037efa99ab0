"""Prefect tasks of the scenario pool (GRAVITY section 3.3): one task run per seed statement."""
from __future__ import annotations

from functools import partial
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from gravity_core.banks import SeedStatement
from gravity_core.layout import RunLayout
from gravity_core.llm import SamplingParams
from gravity_core.pairs.scenarios import parse_scenarios, pool_frame, pool_version, scenario_schema
from gravity_core.stage_configs import ScenariosConfig
from tasks.caching import LLM_TASK
from tasks.llm.client import ModelClient
from tasks.resources import load_prompt
from tasks.rundir import write_parquet_atomic

PROMPT = "scenario_pairs"


def seed_ids(seeds: list[SeedStatement]) -> list[str]:
    return [s.id for s in seeds]


@task(task_run_name="scenarios-{seed.id}", **LLM_TASK)
def generate_scenarios(seed: SeedStatement, cfg: ScenariosConfig, client: ModelClient) -> list[dict]:
    """N validated scenario pairs for one seed statement (re-asked, then quarantined)."""
    request = load_prompt(PROMPT).request(
        SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature),
        scenario_schema(cfg.pairs_per_seed, cfg.max_chars), statement=seed.statement, n_pairs=cfg.pairs_per_seed)
    try:
        return client.structured(request, partial(parse_scenarios, n_pairs=cfg.pairs_per_seed),
                                 stage="scenarios", item_id=seed.id)
    finally:
        client.ledger.flush()


@task(name="write-scenario-pool", cache_policy=NO_CACHE)
def write_pool(by_seed: dict[str, list[dict]], seeds: list[SeedStatement], bank_version: str, cfg: ScenariosConfig,
               client: ModelClient, layout: RunLayout) -> dict:
    """The shared pool file (pool_dir/<version>.parquet) and the run's copy."""
    identity, prompt = client.backend.identity, load_prompt(PROMPT)
    version = pool_version(seed_ids(seeds), cfg.pairs_per_seed,
                           f"{identity.model_dump_json()}|{PROMPT}@{prompt.version}", bank_version)
    pool = pool_frame(by_seed, version, identity.model, prompt.version)
    shared = Path(cfg.pool_dir) / f"{version}.parquet"
    write_parquet_atomic(pool, shared)
    write_parquet_atomic(pool, layout.pool)
    return {"scenario_pairs": pool.height, "seeds": pool["seed_id"].n_unique(), "shared": str(shared.resolve()),
            "pool_version": version}
