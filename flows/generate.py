"""Generation flow (GRAVITY section 3.5): personalized descriptions with the trained adapter."""
from __future__ import annotations

import time

from prefect import flow, unmapped

from gravity_core.recipe import Recipe
from tasks.fanout import settle
from tasks.generate import generate_for_user, generation_model_key, targets, write_generations
from tasks.llm.factory import build_client, generation_llm
from tasks.stage import RunContext, finish_stage, outcome


@flow(name="gravity-generate")
def generate_flow(recipe: Recipe, ctx: RunContext, adapter: str | None = None):
    started = time.time()
    users = targets(ctx.run_dir, recipe.generate)
    client = build_client(generation_llm(recipe.llm, adapter), "generate", ctx.run_dir, ctx.run_id)
    key = generation_model_key(client)
    ids = [u["profile"]["user_id"] for u in users]
    rows, failures = settle(ids, generate_for_user.map(users, unmapped(recipe.generate), unmapped(key),
                                                       unmapped(client)))
    out = ctx.stage_dir("generate")
    written = write_generations(rows, out)
    finish_stage(ctx, "generate", started, artifacts={"generations": f"{out}/generations.parquet"},
                 rows={**written, "ok": written["users"]}, clients=[client], failures=failures,
                 notes={"model": key})
    return outcome(failures, len(users), recipe.run.max_failed_fraction, "users' generations",
                   f"{written['generations']} descriptions")
