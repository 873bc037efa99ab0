"""Generation flow (GRAVITY section 3.5): personalized descriptions with the trained adapter, and
the same targets described by each trained baseline's adapter (GRAVITY-SFT, UserSFT, PrefAlign)."""
from __future__ import annotations

from prefect import flow, unmapped

from gravity_core.recipe import Recipe
from tasks.fanout import settle
from tasks.generate import generate_for_user, generation_plan, target_user_ids, targets, write_generations
from tasks.llm.factory import release_local_models
from tasks.outcomes import generate_result
from tasks.stage import RunContext, StageResult, client_for, gravity_stage


@flow(name="gravity-generate")
@gravity_stage("generate")
def generate_flow(recipe: Recipe, ctx: RunContext) -> StageResult:
    layout = ctx.layout
    users = targets(layout)
    plans, warnings = generation_plan(layout, recipe.llm, recipe.evaluate.trained)
    written, failures, clients = {}, {}, {}
    for plan in plans:
        method = plan["method"]
        clients[method] = client_for(plan["llm"], plan["step"], ctx)
        rows, failed = settle(target_user_ids(users, method),
                              generate_for_user.map(users, unmapped(recipe.generate), unmapped(method),
                                                    unmapped(plan["prompt"]), unmapped(clients[method])),
                              stage="generate")
        written[method], failures = write_generations(rows, layout, method), {**failures, **failed}
        release_local_models()  # this method's adapter is done: one model resident at a time, not four
    return generate_result(layout, users, written, failures, clients, warnings)
