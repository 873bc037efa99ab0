"""Ablations (GRAVITY section 4.3, Table 5): the file work around the sub-runs.

Each ablation is a run directory of its own (RUN_DIR/ablations/<name>/) seeded with the main
run's ingest, profiles, scenario pool and target books, so only pairs, training and generation
are redone; one judge run (RUN_DIR/ablations/_judge/) ranks the original, the full model and
every ablated model together, and the deltas go to RUN_DIR/report/ablations.parquet for Table 5.
"""
from __future__ import annotations

import shutil

import polars as pl
from prefect import task

from gravity_core.evaluation.ablation import PREFIX, ablation_table
from gravity_core.evaluation.config import EvaluateConfig
from gravity_core.evaluation.report import RANKING_COLUMNS
from gravity_core.evaluation.stats import per_user_metric
from gravity_core.layout import GRAVITY, RunLayout
from gravity_core.records import Generation, Verdict
from tasks.records_io import read_frame, write_frame
from tasks.rundir import write_parquet_atomic


def _copy(source, target) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True)
    else:
        shutil.copy2(source, target)


@task(name="check-full-run")
def require_full_run(layout: RunLayout) -> None:
    """The ablations compare against a finished run: its profiles, pool, targets and GRAVITY's
    generations must be there."""
    needed = {"profiles": layout.profiles, "scenario pool": layout.pool, "targets": layout.targets,
              "GRAVITY's generations": layout.generations(GRAVITY)}
    missing = [what for what, path in needed.items() if not path.exists()]
    if missing:
        raise FileNotFoundError(f"{layout.root} has no {', '.join(missing)}: run `gravity run` there first, "
                                "then `gravity ablate`")


@task(task_run_name="seed-ablation-{name}")
def seed_ablation_run(main: RunLayout, sub: RunLayout, name: str) -> None:
    """Copy what an ablation does not change (ingest, profiles, scenario pool, targets) into its run."""
    for source, target in ((main.ingest_dir, sub.ingest_dir), (main.profiles.parent, sub.profiles.parent),
                           (main.pool.parent, sub.pool.parent), (main.targets, sub.targets)):
        _copy(source, target)


@task(name="seed-ablation-judge")
def seed_judge_run(main: RunLayout, judge: RunLayout, names: list[str]) -> dict[str, int]:
    """The judge run: the main run's profiles, targets and GRAVITY's generations, and each ablated
    model's generations as method `ablate_<name>`."""
    shutil.rmtree(judge.generate_root, ignore_errors=True)
    for source, target in ((main.profiles.parent, judge.profiles.parent), (main.targets, judge.targets),
                           (main.generations(GRAVITY), judge.generations(GRAVITY))):
        _copy(source, target)
    counts = {}
    for name in names:
        rows = read_frame(RunLayout.of(main.ablation_dir(name)).generations(GRAVITY), Generation)
        counts[name] = write_frame(rows.with_columns(pl.lit(PREFIX + name).alias("method")), Generation,
                                   judge.generations(PREFIX + name))
    return counts


@task(name="write-ablations")
def write_ablations(main: RunLayout, judge: RunLayout, names: list[str], cfg: EvaluateConfig, seed: int) -> dict:
    """RUN_DIR/report/ablations.parquet: per ablation the preference gain, its change from the full
    model with a bootstrap interval over users, and the paired Wilcoxon p-value."""
    rankings = read_frame(judge.verdicts, Verdict).filter(pl.col("kind") == "ranking").select(RANKING_COLUMNS)
    per_user = per_user_metric(rankings, "preference_gain")
    table = ablation_table(per_user, names, GRAVITY, cfg.n_boot, seed)
    write_parquet_atomic(table, main.ablations)
    return {"ablations": table.height, "users": int(table["n_users"].max() or 0) if table.height else 0}
