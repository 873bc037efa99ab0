"""Profile flow (GRAVITY section 3.2): per-user fan-out over the profile facets."""
from __future__ import annotations

import time

from prefect import flow, unmapped

from gravity_core.recipe import Recipe
from tasks.fanout import pick, settle
from tasks.llm.factory import build_client
from tasks.profile_io import load_seeds, load_user_inputs, write_profiles
from tasks.profiles import (
    PROFILE_PROMPTS, infer_demographics, infer_interests, infer_personality, infer_values, model_key,
    summarize_user,
)
from tasks.resources import load_prompt
from tasks.stage import RunContext, finish_stage, outcome


@flow(name="gravity-profiles")
def profiles_flow(recipe: Recipe, ctx: RunContext):
    started = time.time()
    cfg = recipe.profiles
    users = load_user_inputs(ctx.stage_dir("ingest"), ctx.stage_dir("ingest"))
    seeds, seeds_version = load_seeds(recipe.banks, recipe.run.seed)
    client = build_client(recipe.llm, "profile", ctx.run_dir, ctx.run_id)
    key = model_key(client)
    ids = [u.user_id for u in users]

    demographics, failed = settle(ids, infer_demographics.map(users, unmapped(cfg), unmapped(key), unmapped(client)))
    ok = pick(users, ids, demographics)
    ok_ids = [u.user_id for u in ok]
    ok_demo = [demographics[i] for i in ok_ids]
    interests, f1 = settle(ok_ids, infer_interests.map(ok, unmapped(cfg)))
    values, f2 = settle(ok_ids, infer_values.map(ok, ok_demo, unmapped(seeds), unmapped(cfg), unmapped(key),
                                                unmapped(client)))
    personality, f3 = settle(ok_ids, infer_personality.map(ok, ok_demo, unmapped(cfg), unmapped(key),
                                                           unmapped(client)))
    summaries, f4 = settle(ok_ids, summarize_user.map(ok, ok_demo, unmapped(cfg), unmapped(key), unmapped(client)))
    failures = {**f4, **f3, **f2, **f1, **failed}

    identity = client.backend.identity
    models = {"llm": f"{identity.backend}/{identity.model}" + (f"+{identity.adapter}" if identity.adapter else "")}
    prompts = {name: load_prompt(name).version for name in PROFILE_PROMPTS}
    out = ctx.stage_dir("profiles")
    rows = write_profiles(out, users, {"demographics": demographics, "interests": interests, "values": values,
                                       "personality": personality, "summary": summaries},
                          failures, models, prompts, {"seed_statements": seeds_version})
    finish_stage(ctx, "profiles", started,
                 artifacts={"profiles": f"{out}/profiles.parquet", "stances": f"{out}/stances.parquet",
                            "users": f"{out}/users", "failures": f"{out}/failures.parquet"},
                 rows={**rows, "ok": rows["profiles"], "seeds": len(seeds)}, clients=[client], failures=failures,
                 notes={"values_batch_size": cfg.values_batch_size, "seed_statements_version": seeds_version})
    return outcome(failures, len(users), recipe.run.max_failed_fraction, "user profiles", f"{rows['profiles']} profiles")
