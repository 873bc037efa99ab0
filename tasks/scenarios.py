"""Prefect tasks of the scenario pool (GRAVITY section 3.3): one task run per seed statement."""
from __future__ import annotations

import hashlib
import json
from functools import partial
from pathlib import Path

from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from gravity_core.banks import SeedStatement
from gravity_core.llm import SamplingParams
from gravity_core.pairs.scenarios import parse_scenarios, pool_frame, scenario_schema
from gravity_core.stage_configs import ScenariosConfig
from tasks.llm.client import ModelClient
from tasks.resources import load_prompt
from tasks.rundir import write_parquet_atomic

PROMPT = "scenario_pairs"


def scenario_model_key(client: ModelClient) -> str:
    blob = json.dumps([client.backend.identity.model_dump(), load_prompt(PROMPT).version], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@task(task_run_name="scenarios-{seed.id}", cache_policy=(INPUTS - "client") + TASK_SOURCE, persist_result=True,
      retries=1, retry_delay_seconds=2)
def generate_scenarios(seed: SeedStatement, cfg: ScenariosConfig, model_key: str, client: ModelClient) -> list[dict]:
    """N validated scenario pairs for one seed statement (re-asked, then quarantined)."""
    request = load_prompt(PROMPT).request(
        SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature),
        scenario_schema(cfg.pairs_per_seed, cfg.max_chars), statement=seed.statement, n_pairs=cfg.pairs_per_seed)
    try:
        return client.structured(request, partial(parse_scenarios, n_pairs=cfg.pairs_per_seed),
                                 stage="scenarios", item_id=seed.id)
    finally:
        client.ledger.flush()


@task(name="write-scenario-pool")
def write_pool(by_seed: dict[str, list[dict]], version: str, model: str, pool_dir: str, run_out: str) -> dict:
    """The shared pool file (pool_dir/<version>.parquet) and the run's copy."""
    pool = pool_frame(by_seed, version, model, load_prompt(PROMPT).version)
    shared = Path(pool_dir) / f"{version}.parquet"
    write_parquet_atomic(pool, shared)
    write_parquet_atomic(pool, Path(run_out) / "pool.parquet")
    return {"scenario_pairs": pool.height, "seeds": pool["seed_id"].n_unique(), "shared": str(shared.resolve())}
