"""Profile flow (GRAVITY section 3.2): per-user fan-out over the profile facets."""
from __future__ import annotations

import time

from prefect import flow, unmapped

from gravity_core.recipe import Recipe
from tasks.fanout import settle, settle_all, survivors
from tasks.llm.factory import build_client
from tasks.profile_io import load_seeds, load_user_inputs, write_profiles
from tasks.profiles import (
    PROFILE_PROMPTS, infer_demographics, infer_interests, infer_personality, infer_values, model_key,
    provenance_models, summarize_user,
)
from tasks.resources import prompt_versions
from tasks.stage import RunContext, finish_stage, outcome


@flow(name="gravity-profiles")
def profiles_flow(recipe: Recipe, ctx: RunContext):
    started = time.time()
    cfg = recipe.profiles
    users = load_user_inputs(ctx.stage_dir("ingest"), ctx.stage_dir("ingest"))
    seeds, seeds_version = load_seeds(recipe.banks, recipe.run.seed)
    client = build_client(recipe.llm, "profile", ctx.run_dir, ctx.run_id)
    key = model_key(client)
    demographics, failed = settle([u.user_id for u in users],
                                  infer_demographics.map(users, unmapped(cfg), unmapped(key), unmapped(client)))
    ok, ok_ids, ok_demo = survivors(users, demographics)
    # All facets are submitted before any is awaited, so they run concurrently.
    futures = {"interests": infer_interests.map(ok, unmapped(cfg)),
               "values": infer_values.map(ok, ok_demo, unmapped(seeds), unmapped(cfg), unmapped(key), unmapped(client)),
               "personality": infer_personality.map(ok, ok_demo, unmapped(cfg), unmapped(key), unmapped(client)),
               "summary": summarize_user.map(ok, ok_demo, unmapped(cfg), unmapped(key), unmapped(client))}
    facets, failures = settle_all(ok_ids, futures)
    facets["demographics"], failures = demographics, {**failures, **failed}

    out = ctx.stage_dir("profiles")
    rows = write_profiles(out, users, facets, failures, provenance_models(client), prompt_versions(PROFILE_PROMPTS),
                          {"seed_statements": seeds_version})
    finish_stage(ctx, "profiles", started,
                 artifacts={"profiles": f"{out}/profiles.parquet", "stances": f"{out}/stances.parquet",
                            "users": f"{out}/users", "failures": f"{out}/failures.parquet"},
                 rows={**rows, "ok": rows["profiles"], "seeds": len(seeds)}, clients=[client], failures=failures,
                 notes={"values_batch_size": cfg.values_batch_size, "seed_statements_version": seeds_version})
    return outcome(failures, len(users), recipe.run.max_failed_fraction, "user profiles", f"{rows['profiles']} profiles")
