"""Generation flow (GRAVITY section 3.5): personalized descriptions with the trained adapter."""
from __future__ import annotations

from prefect import flow, unmapped

from gravity_core.layout import GRAVITY
from gravity_core.recipe import Recipe
from tasks.fanout import settle
from tasks.generate import generation_adapter, generate_for_user, target_user_ids, targets, write_generations
from tasks.llm.factory import generation_llm
from tasks.stage import RunContext, StageResult, client_for, gravity_stage


@flow(name="gravity-generate")
@gravity_stage("generate")
def generate_flow(recipe: Recipe, ctx: RunContext) -> StageResult:
    layout = ctx.layout
    users = targets(layout)
    client = client_for(generation_llm(recipe.llm, generation_adapter(layout, recipe.llm)), "generate", ctx)
    rows, failures = settle(target_user_ids(users), generate_for_user.map(users, unmapped(recipe.generate),
                                                                          unmapped(GRAVITY), unmapped(client)),
                            stage="generate")
    written = write_generations(rows, layout, GRAVITY)
    identity = client.backend.identity
    return StageResult(done=f"{written['generations']} descriptions", what="users' generations", total=len(users),
                       artifacts={"generations": layout.generations(GRAVITY)}, rows=written, failures=failures,
                       clients=[client], notes={"model": identity.model, "adapter": identity.adapter})
