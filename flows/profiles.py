"""Profile flow (GRAVITY section 3.2): per-user fan-out over the profile facets, or (large cohorts,
`run.users_per_task` > 1) one task run per batch of users doing every facet."""
from __future__ import annotations

from prefect import flow, unmapped

from gravity_core.recipe import Recipe
from tasks.fanout import batch_ids, batched, settle, settle_all, settle_batches, survivors
from tasks.profile_io import country_options, load_seeds, load_user_inputs, user_ids, write_profiles
from tasks.profiles import (
    infer_demographics, infer_interests, infer_personality, infer_values, profile_batch, summarize_user,
)
from tasks.stage import RunContext, StageResult, client_for, gravity_stage


@flow(name="gravity-profiles")
@gravity_stage("profiles")
def profiles_flow(recipe: Recipe, ctx: RunContext) -> StageResult:
    cfg, layout = recipe.profiles, ctx.layout
    users = load_user_inputs(layout)
    seeds, seeds_version = load_seeds(recipe.banks, recipe.run.seed)
    client = client_for(recipe.llm, "profile", ctx)
    countries = country_options(recipe)
    if recipe.run.users_per_task > 1:
        batches = batched(users, user_ids(users), recipe.run.users_per_task)
        facets, failures = settle_batches(batch_ids(batches), profile_batch.map(
            batches, unmapped(seeds), unmapped(cfg), unmapped(countries), unmapped(client)), stage="profiles")
    else:
        ids = user_ids(users)
        demographics, failed = settle(ids, infer_demographics.map(users, unmapped(cfg), unmapped(countries),
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
                       notes={"values_batch_size": cfg.values_batch_size, "seed_statements_version": seeds_version,
                              "users_per_task": recipe.run.users_per_task})
