"""Training flow (GRAVITY section 3.4): one adapter on all users' pairs, then held-out evaluation;
then the training-based methods it is compared with (GRAVITY-SFT, UserSFT, PrefAlign), each its
own adapter under train/<method>/."""
from __future__ import annotations

from prefect import flow

from gravity_core.evaluation.trained import train_configs
from gravity_core.layout import GRAVITY
from gravity_core.recipe import Recipe
from tasks.profile_io import load_seeds
from tasks.stage import RunContext, StageResult, gravity_stage
from tasks.outcomes import train_result
from tasks.train_stage import adapter_sha, fingerprint, heldout, train


@flow(name="gravity-train")
@gravity_stage("train")
def train_flow(recipe: Recipe, ctx: RunContext, resume: bool = False) -> StageResult:
    layout = ctx.layout
    configs = train_configs(recipe.train, recipe.evaluate.trained, recipe.evaluate.train_overrides)
    summaries = {}
    for method, cfg in configs.items():
        data = fingerprint(layout, method)
        summaries[method] = train(cfg, layout, method, recipe.llm.cache_dir, data["sha"], data["facets"], resume,
                                  ctx.run_id)
    seeds, _ = load_seeds(recipe.banks, recipe.run.seed)
    evaluation = heldout(recipe.train, layout, GRAVITY, seeds, recipe.llm.cache_dir, adapter_sha(summaries[GRAVITY]))
    return train_result(layout, summaries, evaluation)
