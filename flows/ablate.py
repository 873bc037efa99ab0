"""`gravity-ablate` (GRAVITY section 4.3, Table 5): retrain GRAVITY without each preference-data
subset, describe the run's targets with every ablated model, judge them beside the full model,
and add Table 5 to the run's report. Runs after `gravity-pipeline` on the same run directory."""
from __future__ import annotations

from prefect import flow
from prefect.settings import temporary_settings

from flows.evaluate import judge_flow, report_flow
from flows.generate import generate_flow
from flows.pairs import pairs_flow
from flows.train import train_flow
from gravity_core.evaluation.ablation import ablation_overrides
from tasks.environment import (load_recipe, prepare_process, quiet_env, results_settings, results_storage, run_context,
                               run_logs, with_results)
from tasks.evaluate.ablate import require_full_run, seed_ablation_run, seed_judge_run, write_ablations
from tasks.run_summary import summarize_run


@flow(name="gravity-ablate", log_prints=True)
def gravity_ablate(recipe: str = "sample", overrides: list[str] | None = None, out: str = "runs/sample") -> dict:
    """Table 5: for each of the recipe's `evaluate.ablations`, retrain without that subset of the
    preference data, generate, judge against the full model; then rewrite the report.

    Args:
        recipe: The recipe of the finished run (a name from recipes/ or a YAML path).
        overrides: Recipe overrides, each `section.key=value`, as given to that run.
        out: The finished run's directory; the ablations go to out/ablations/.
    """
    quiet_env()
    spec = load_recipe(recipe, overrides or [])
    prepare_process(spec)
    ctx = run_context(spec, out)
    storage = results_storage(spec)
    with temporary_settings(updates=results_settings(spec)), run_logs(ctx.layout, "ablate.log"):
        require_full_run(ctx.layout)
        for name in spec.evaluate.ablations:
            ablated = load_recipe(recipe, [*(overrides or []), *ablation_overrides(name)])
            sub = run_context(ablated, ctx.layout.ablation_dir(name))
            seed_ablation_run(ctx.layout, sub.layout, name)
            for stage in (pairs_flow, train_flow, generate_flow):
                with_results(stage, storage)(ablated, sub)
        judged = load_recipe(recipe, [*(overrides or []), "evaluate.sanity=false"])
        judge = run_context(judged, ctx.layout.ablation_judge_dir)
        seed_judge_run(ctx.layout, judge.layout, spec.evaluate.ablations)
        with_results(judge_flow, storage)(judged, judge)
        write_ablations(ctx.layout, judge.layout, spec.evaluate.ablations, spec.evaluate, spec.run.seed)
        with_results(report_flow, storage)(spec, ctx)
    return summarize_run(ctx.layout)
