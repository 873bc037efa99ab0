"""`gravity-pipeline`: the whole of GRAVITY as one deployable flow (paper Figure 1).

Its parameters are plain JSON values, so a Prefect worker can run it and the UI renders a form;
the CLI's `gravity run` (and every stage command) calls this same flow.
"""
from __future__ import annotations

from prefect import flow
from prefect.settings import temporary_settings

from flows.evaluate import baselines_flow, judge_flow, report_flow, targets_flow
from flows.generate import generate_flow
from flows.ingest import ingest_flow
from flows.pairs import pairs_flow
from flows.profiles import profiles_flow
from flows.scenarios import scenarios_flow
from flows.train import train_flow
from gravity_core.pipeline import CohortFilter, StageName, selected_stages, trains
from tasks.environment import (check_inputs, load_recipe, prepare_process, quiet_env, results_settings, results_storage, run_context,
                               run_logs, with_results)
from tasks.run_summary import summarize_run

STAGE_FLOWS = {"ingest": ingest_flow, "profiles": profiles_flow, "scenarios": scenarios_flow,
               "pairs": pairs_flow, "train": train_flow, "targets": targets_flow, "generate": generate_flow,
               "baselines": baselines_flow, "judge": judge_flow, "report": report_flow}


@flow(name="gravity-pipeline", log_prints=True)
def gravity_pipeline(recipe: str = "sample", overrides: list[str] | None = None, out: str = "runs/sample",
                     stages: list[StageName] | None = None, cohort: CohortFilter | None = None,
                     resume_training: bool = False) -> dict:
    """Run GRAVITY: ingest, profiles, scenario pool, preference pairs, DPO training, target books,
    generation, prompting baselines, the LLM judge and the report.

    Args:
        recipe: A recipe name from recipes/ (sample, paper...) or a path to a recipe YAML file.
        overrides: Recipe overrides, each `section.key=value` (value in YAML), e.g. `cohort.users_per_country=1`.
        out: The run directory: every artifact, the manifest, the ledger and the logs go here.
        stages: The stages to run, in pipeline order; empty runs all of them.
        cohort: Narrow the recipe's cohort: named users, countries, minimum reviews, a size cap.
        resume_training: Continue training from the last complete checkpoint in the run directory.
    """
    quiet_env()  # before the recipe check imports TRL (and with it huggingface_hub)
    spec = load_recipe(recipe, [*(overrides or []), *(cohort.as_overrides() if cohort else [])],
                       build_train=trains(stages))
    check_inputs(spec, stages)
    prepare_process(spec)
    ctx = run_context(spec, out)
    storage = results_storage(spec)
    with temporary_settings(updates=results_settings(spec)), run_logs(ctx.layout):
        for stage in selected_stages(stages):
            options = {"resume": resume_training} if stage == "train" else {}
            with_results(STAGE_FLOWS[stage], storage)(spec, ctx, **options)
    return summarize_run(ctx.layout)
