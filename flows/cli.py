"""The `gravity` command: one subcommand per stage, plus `run` (the whole pipeline).

Every stage command takes --recipe, --out and repeated --set key=value. Prefect is imported
only after the environment is prepared (stable result storage under the cache folder).
"""
from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Optional

import typer

from gravity_core.recipe import Recipe, RecipeError, parse_recipe

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="GRAVITY: profile-grounded synthetic preferences for personalized generation.")
DEFAULT_RECIPE = Path("recipes/sample.yaml")
RecipeOpt = typer.Option(DEFAULT_RECIPE, "--recipe", "-r", help="YAML recipe (see recipes/)")
OutOpt = typer.Option(..., "--out", "-o", help="run directory (artifacts, manifest.json, ledger.parquet)")
SetOpt = typer.Option(None, "--set", "-s", help="override a recipe key: section.key=value (repeatable)")


def load_recipe(path: Path, overrides: list[str] | None) -> Recipe:
    """Parse the recipe or exit with the error naming the bad key."""
    if not path.exists():
        raise typer.BadParameter(f"recipe not found: {path}", param_hint="--recipe")
    try:
        return parse_recipe(path.read_text(encoding="utf-8"), overrides or [], source=str(path))
    except RecipeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def prepare_environment(recipe: Recipe) -> None:
    """Stable Prefect result storage (task caches survive new processes), quiet, offline."""
    cache = Path(recipe.llm.cache_dir).resolve()
    os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "true")
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(cache / "prefect-results"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if recipe.run.torch_threads:
        import torch
        torch.set_num_threads(recipe.run.torch_threads)


def context(recipe: Recipe, out: Path):
    from tasks.stage import RunContext, recipe_hash
    out.mkdir(parents=True, exist_ok=True)
    return RunContext(run_dir=str(out.resolve()), run_id=uuid.uuid4().hex[:12], recipe_name=recipe.run.name,
                      recipe_hash=recipe_hash(recipe))


def _finish(state, out: Path) -> None:
    manifest = out / "manifest.json"
    typer.echo(f"manifest: {manifest}")
    if manifest.exists():
        for name, stage in json.loads(manifest.read_text())["stages"].items():
            typer.echo(f"  {name}: {stage['status']} in {stage['seconds']}s, calls {stage['model_calls']}")
            for label, path in stage["artifacts"].items():
                typer.echo(f"    {label}: {out / path}")
            if "heldout" in stage["notes"]:
                typer.echo(f"    held-out evaluation: {json.dumps(stage['notes']['heldout'])}")
    if state is not None and not state.is_completed():
        typer.echo(f"error: {state.message}", err=True)
        raise typer.Exit(1)


def _stage(recipe: Path, out: Path, overrides: list[str] | None, module: str, flow: str, **params) -> None:
    """Load the recipe, prepare the environment, run one flow and report where everything is."""
    import importlib
    rec = load_recipe(recipe, overrides)
    prepare_environment(rec)
    flow_fn = getattr(importlib.import_module(module), flow)
    _finish(flow_fn(rec, context(rec, out), return_state=True, **params), out)


@app.command()
def ingest(reviews: list[Path] = typer.Option(..., help="review file(s): .jsonl, .jsonl.gz, .parquet"),
           meta: list[Path] = typer.Option(..., help="item-metadata file(s)"),
           users: Optional[Path] = typer.Option(None, help="known user attributes (csv/jsonl)"),
           recipe: Path = RecipeOpt, out: Path = OutOpt, set_: list[str] = SetOpt):
    """Read Amazon Reviews 2023 files into parquet (+ quarantine) and select the cohort."""
    data = [f"data.reviews={json.dumps([str(p) for p in reviews])}", f"data.meta={json.dumps([str(p) for p in meta])}",
            f"data.users={json.dumps(str(users) if users else None)}"]
    rec = load_recipe(recipe, data + (set_ or []))
    prepare_environment(rec)
    from flows.ingest import ingest_flow
    result = ingest_flow(rec, context(rec, out))
    summary = result["summary"]
    for kind in ("reviews", "books", "users"):
        counts = getattr(summary, kind)
        if counts is not None:
            typer.echo(f"{kind}: read {counts.lines_read}, ingested {counts.ingested}, "
                       f"quarantined {counts.quarantined} (duplicates {counts.duplicates})")
    typer.echo(f"cohort: {result['cohort']['users']} users")
    _finish(None, out)


@app.command()
def profiles(recipe: Path = RecipeOpt, out: Path = OutOpt, set_: list[str] = SetOpt):
    """Build every cohort user's profile (needs `ingest` in the same RUN_DIR)."""
    _stage(recipe, out, set_, "flows.profiles", "profiles_flow")


@app.command()
def scenarios(recipe: Path = RecipeOpt, out: Path = OutOpt, set_: list[str] = SetOpt):
    """Generate the shared scenario pool: N scenario pairs per seed statement."""
    _stage(recipe, out, set_, "flows.scenarios", "scenarios_flow")


@app.command()
def pairs(recipe: Path = RecipeOpt, out: Path = OutOpt, set_: list[str] = SetOpt):
    """Assemble every user's preference pairs and export them for TRL (needs profiles + scenarios)."""
    _stage(recipe, out, set_, "flows.pairs", "pairs_flow")


@app.command()
def train(recipe: Path = RecipeOpt, out: Path = OutOpt, set_: list[str] = SetOpt,
          resume: bool = typer.Option(False, help="continue from the last complete checkpoint in RUN_DIR/train")):
    """DPO-train one LoRA adapter on all users' pairs (TRL), then score the held-out split."""
    _stage(recipe, out, set_, "flows.train", "train_flow", resume=resume)


@app.command()
def generate(recipe: Path = RecipeOpt, out: Path = OutOpt, set_: list[str] = SetOpt,
             adapter: Optional[Path] = typer.Option(None, help="LoRA adapter (default: RUN_DIR/train/adapter if present)")):
    """Write personalized book descriptions for every user's target books."""
    default = out / "train" / "adapter"
    chosen = adapter or (default if (default / "adapter_config.json").exists() else None)
    _stage(recipe, out, set_, "flows.generate", "generate_flow", adapter=str(chosen.resolve()) if chosen else None)


@app.command()
def run(recipe: Path = RecipeOpt, out: Path = OutOpt, set_: list[str] = SetOpt):
    """The main job: every implemented stage as one Prefect flow of subflows."""
    _stage(recipe, out, set_, "flows.run", "gravity_run")


@app.command()
def banks(recipe: Path = RecipeOpt, set_: list[str] = SetOpt):
    """Print the knowledge banks' counts (seeds per source/topic, items per trait/style, genres)."""
    rec = load_recipe(recipe, set_)
    from tasks.bank_summary import load_bank_summary
    typer.echo(json.dumps(load_bank_summary(rec.banks), indent=2))


@app.command()
def ledger(run_dir: Path = typer.Argument(..., help="a run directory")):
    """Model-call totals per stage and per user from RUN_DIR/ledger.parquet."""
    from gravity_core.ledger_report import totals
    from tasks.llm.ledger import read_ledger
    import polars as pl
    frame = read_ledger(run_dir)
    if frame.is_empty():
        typer.echo(f"no ledger rows in {run_dir}")
        return
    with pl.Config(tbl_cols=-1, tbl_rows=-1, tbl_width_chars=220, fmt_str_lengths=40):
        for title, table in totals(frame).items():
            typer.echo(f"\n{title}\n{table}")


@app.command()
def agreement(run_dir: Path = typer.Argument(..., help="a run directory with profiles"),
              truth: str = typer.Option("package:sample/ground_truth.json", help="planted ground truth JSON")):
    """Agreement of the run's profiles with planted ground truth (stances, OCEAN, genres, inferred demographics)."""
    from gravity_core.profile.agreement import agreement as score
    from tasks.profile_io import read_profiles
    from tasks.resources import resolve_path
    profiles = read_profiles(run_dir)
    result = score(profiles, json.loads(resolve_path(truth).read_text())["users"])
    (run_dir / "profiles" / "agreement.json").write_text(json.dumps(result, indent=2))
    typer.echo(json.dumps(result, indent=2))


def main() -> None:
    try:
        app()
    except FileNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
