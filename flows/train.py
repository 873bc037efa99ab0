"""Training flow (GRAVITY section 3.4): one adapter on all users' pairs, then held-out evaluation."""
from __future__ import annotations

import time

from prefect import flow

from gravity_core.recipe import Recipe
from tasks.stage import RunContext, finish_stage
from tasks.train_stage import fingerprint, heldout, train


@flow(name="gravity-train")
def train_flow(recipe: Recipe, ctx: RunContext, resume: bool = False) -> dict:
    started = time.time()
    pairs = fingerprint(ctx.run_dir)
    summary = train(recipe.train, ctx.run_dir, recipe.llm.cache_dir, pairs["sha"], pairs["facets"], resume,
                    ctx.run_id)
    evaluation = heldout(recipe.train, ctx.run_dir, summary["adapter"], recipe.llm.cache_dir, pairs["sha"])
    out = ctx.stage_dir("train")
    finish_stage(ctx, "train", started,
                 artifacts={"adapter": summary["adapter"], "metrics": f"{out}/metrics.jsonl",
                            "heldout_eval": f"{out}/heldout_eval.json"},
                 rows={"steps": summary["steps"], "train_rows": summary["metrics"]["train_rows"]},
                 notes={"train_seconds": summary["seconds"], "method": summary["method"],
                        "final": {k: v for k, v in summary["metrics"].items() if isinstance(v, (int, float))},
                        "heldout": evaluation})
    return {**summary, "heldout": evaluation}
