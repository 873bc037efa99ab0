"""Profile flow (GRAVITY section 3.2): per-user fan-out over the profile facets."""
from __future__ import annotations

from prefect import flow, unmapped

from gravity_core.recipe import Recipe
from tasks.fanout import settle, settle_all, survivors
from tasks.profile_io import country_options, load_seeds, load_user_inputs, user_ids, write_profiles
from tasks.profiles import infer_demographics, infer_interests, infer_personality, infer_values, summarize_user
from tasks.stage import RunContext, StageResult, client_for, gravity_stage


@flow(name="gravity-profiles")
@gravity_stage("profiles")
def profiles_flow(recipe: Recipe, ctx: RunContext) -> StageResult:
    cfg, layout = recipe.profiles, ctx.layout
    users = load_user_inputs(layout)
    seeds, seeds_version = load_seeds(recipe.banks, recipe.run.seed)
    client = client_for(recipe.llm, "profile", ctx)
    ids = user_ids(users)
    demographics, failed = settle(ids, infer_demographics.map(users, unmapped(cfg), unmapped(country_options(recipe)),
                                                               unmapped(client)))
    ok, ok_ids, ok_demo = survivors(users, demographics)
    # All facets are submitted before any is awaited, so they run concurrently.
    futures = {"interests": infer_interests.map(ok, unmapped(cfg)),
               "values": infer_values.map(ok, ok_demo, unmapped(seeds), unmapped(cfg), unmapped(client)),
               "personality": infer_personality.map(ok, ok_demo, unmapped(cfg), unmapped(client)),
               "summary": summarize_user.map(ok, ok_demo, unmapped(cfg), unmapped(client))}
    facets, failures = settle_all(ok_ids, futures, stage="profiles")
    facets["demographics"], failures = demographics, {**failures, **failed}
    rows = write_profiles(layout, users, facets, failures, client, seeds_version)
    return StageResult(done=f"{rows['profiles']} profiles", what="user profiles", total=len(users),
                       artifacts={"profiles": layout.profiles, "stances": layout.stances, "users": layout.profile_users,
                                  "failures": layout.profile_failures},
                       rows={**rows, "seeds": len(seeds)}, failures=failures, clients=[client],
                       notes={"values_batch_size": cfg.values_batch_size, "seed_statements_version": seeds_version})
