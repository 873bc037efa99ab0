"""Training flow (GRAVITY section 3.4): one adapter on all users' pairs, then held-out evaluation."""
from __future__ import annotations

from prefect import flow

from gravity_core.layout import GRAVITY
from gravity_core.recipe import Recipe
from tasks.profile_io import load_seeds
from tasks.stage import RunContext, StageResult, gravity_stage
from tasks.train_stage import adapter_sha, fingerprint, heldout, train, train_rows


@flow(name="gravity-train")
@gravity_stage("train")
def train_flow(recipe: Recipe, ctx: RunContext, resume: bool = False) -> StageResult:
    layout = ctx.layout
    data = fingerprint(layout)
    summary = train(recipe.train, layout, GRAVITY, recipe.llm.cache_dir, data["sha"], data["facets"], resume,
                    ctx.run_id)
    seeds, _ = load_seeds(recipe.banks, recipe.run.seed)
    evaluation = heldout(recipe.train, layout, GRAVITY, seeds, recipe.llm.cache_dir, adapter_sha(summary))
    return StageResult(done=f"{summary['steps']} {summary['method']} steps", what="adapters", total=1,
                       artifacts={"adapter": layout.adapter(GRAVITY), "metrics": layout.train_metrics(GRAVITY),
                                  "heldout_eval": layout.heldout_eval(GRAVITY)},
                       rows={"steps": summary["steps"], "train_rows": train_rows(summary)},
                       notes={"train_seconds": summary["seconds"], "method": summary["method"],
                              "final": summary["metrics"], "heldout": evaluation},
                       value={**summary, "heldout": evaluation})
