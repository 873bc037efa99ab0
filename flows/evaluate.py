"""Evaluation flows (GRAVITY section 4.1, appendix D.2-D.3): the run's target books, the
prompting baselines, the LLM judge, and the report (Table 2)."""
from __future__ import annotations

from prefect import flow, unmapped

from gravity_core.evaluation.config import baselines_llm
from gravity_core.recipe import Recipe
from tasks.evaluate.baselines import baseline_users, baselines_for_user, write_baselines
from tasks.evaluate.judge import item_count, judge_user, judge_users, write_similarity, write_verdicts
from tasks.evaluate.report import write_report
from tasks.evaluate.targets import write_targets
from tasks.fanout import settle
from tasks.stage import RunContext, StageResult, client_for, gravity_stage


@flow(name="gravity-targets")
@gravity_stage("targets")
def targets_flow(recipe: Recipe, ctx: RunContext) -> StageResult:
    rows = write_targets(ctx.layout, recipe.evaluate)
    return StageResult(done=f"{rows['targets']} target books for {rows['users']} users", what="users",
                       total=rows["users"], artifacts={"targets": ctx.layout.targets}, rows=rows)


@flow(name="gravity-baselines")
@gravity_stage("baselines")
def baselines_flow(recipe: Recipe, ctx: RunContext) -> StageResult:
    layout, cfg = ctx.layout, recipe.evaluate
    users = baseline_users(layout, cfg)
    client = client_for(baselines_llm(recipe.llm), "baselines", ctx)
    rows, failures = settle([u["user_id"] for u in users],
                            baselines_for_user.map(users, unmapped(cfg), unmapped(client)), stage="baselines")
    written = write_baselines(rows, layout, cfg.baselines)
    return StageResult(done=f"{sum(written.values())} baseline descriptions", what="users' baselines",
                       total=len(users), artifacts={m: layout.generations(m) for m in cfg.baselines},
                       rows=written, failures=failures, clients=[client],
                       notes={"model": client.backend.identity.model})


@flow(name="gravity-judge")
@gravity_stage("judge")
def judge_flow(recipe: Recipe, ctx: RunContext) -> StageResult:
    layout, cfg = ctx.layout, recipe.evaluate
    users = judge_users(layout, cfg, recipe.run.seed)
    client = client_for(recipe.llm, "judge", ctx)
    results, failed_users = settle([u["user_id"] for u in users],
                                   judge_user.map(users, unmapped(cfg), unmapped(client)), stage="judge")
    rows, failed_items = write_verdicts(results, layout)
    rows["similarity"] = write_similarity(layout, cfg)
    return StageResult(done=f"{rows['rankings']} rankings, {rows['scores']} scores, {rows['sanity']} sanity",
                       what="judged books", total=item_count(users), rows=rows,
                       failures={**failed_users, **failed_items},
                       artifacts={"verdicts": layout.verdicts, "sanity": layout.sanity_verdicts,
                                  "similarity": layout.similarity}, clients=[client],
                       notes={"judge": client.backend.identity.model, "orderings": cfg.orderings})


@flow(name="gravity-report")
@gravity_stage("report")
def report_flow(recipe: Recipe, ctx: RunContext) -> StageResult:
    layout = ctx.layout
    summary = write_report(layout, recipe)
    return StageResult(done=f"report for {summary['methods']} methods", what="reports", total=1,
                       artifacts={"report_md": layout.report_md, "report_html": layout.report_html,
                                  "metrics": layout.report_metrics},
                       rows={"methods": summary["methods"], "users": summary["users"]},
                       warnings=summary["warnings"], notes={"judge_flags": summary["flags"]})
