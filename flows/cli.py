"""The `gravity` command. Every stage command runs the deployable `gravity-pipeline` flow with
that stage selected; `gravity run` runs all of them. Errors are one line on stderr (exit 2 for
usage errors, 1 for run failures); `--verbose` shows library logs and tracebacks.
"""
from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="GRAVITY: profile-grounded synthetic preferences for personalized generation.")
RecipeOpt = typer.Option("sample", "--recipe", "-r", help="recipe name in recipes/ (sample, paper...) or a YAML path")
OutOpt = typer.Option(..., "--out", "-o", help="run directory (artifacts, manifest.json, ledger.parquet, logs/)")
SetOpt = typer.Option(None, "--set", "-s", help="override a recipe key: section.key=value (repeatable)")
VERBOSE = {"on": False}


@app.callback()
def options(verbose: bool = typer.Option(False, "--verbose", "-v",
                                         help="show library logs, warnings and tracebacks (also after the command)")):
    """GRAVITY: profile-grounded synthetic preferences for personalized generation."""
    VERBOSE["on"] = VERBOSE["on"] or verbose


def _quiet_prefect_console() -> None:
    """Prefect logs go to RUN_DIR/logs/ only (set before Prefect configures logging)."""
    if not VERBOSE["on"]:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_LOGGING_LOGGERS_UVICORN_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")


def run_pipeline(recipe: str, out: Path, overrides: list[str] | None, stages: list[str] | None, *,
                 ablate: bool = False, **params) -> dict:
    """Validate the recipe (fast, before Prefect starts), then run the pipeline flow (or, with
    `ablate`, the ablations flow) with the live console; print the summary table and raise on failure."""
    from gravity_core.pipeline import trains
    from tasks.environment import check_inputs, load_recipe, prepare_process
    from tasks.model_packages import check_installed
    parsed = load_recipe(recipe, overrides, build_train=ablate or trains(stages))
    if not ablate:
        check_inputs(parsed, stages)
    check_installed(parsed)
    prepare_process(parsed)
    _quiet_prefect_console()
    from contextlib import nullcontext
    from flows.pipeline import gravity_pipeline
    from gravity_core.layout import RunLayout
    from tasks.console import RunConsole, captured_output
    from tasks.run_summary import summarize_run
    layout = RunLayout.of(out)
    with (nullcontext(sys.stdout) if VERBOSE["on"] else captured_output(layout.logs / "console.log")) as stream:
        view = RunConsole(stream)
        try:
            with view.live():
                if ablate:
                    from flows.ablate import gravity_ablate
                    return gravity_ablate(recipe=recipe, overrides=overrides or [], out=str(out))
                return gravity_pipeline(recipe=recipe, overrides=overrides or [], out=str(out), stages=stages,
                                        **params)
        finally:
            if (done := summarize_run(layout))["stages"]:
                view.summary(done)
                if "report" in done["stages"] and layout.report_html.exists():
                    view.console.print(f"report: {layout.report_html} (and {layout.report_md.name})", highlight=False)


@app.command()
def ingest(reviews: list[Path] = typer.Option(..., help="review file(s): .jsonl, .jsonl.gz, .parquet"),
           meta: list[Path] = typer.Option(..., help="item-metadata file(s)"),
           users: Optional[Path] = typer.Option(None, help="known user attributes (csv/jsonl); optional"),
           recipe: str = RecipeOpt, out: Path = OutOpt, set_: list[str] = SetOpt):
    """Read Amazon Reviews 2023 files into parquet (+ quarantine) and select the cohort."""
    data = [f"data.reviews={json.dumps([str(p) for p in reviews])}", f"data.meta={json.dumps([str(p) for p in meta])}",
            f"data.users={json.dumps(str(users) if users else None)}"]
    run_pipeline(recipe, out, data + (set_ or []), ["ingest"])
    _ingest_report(out)


def _ingest_report(out: Path) -> None:
    from tasks.rundir import read_manifest
    from gravity_core.layout import RunLayout
    stage = read_manifest(RunLayout.of(out)).stages["ingest"]
    counts, coverage = stage.notes["counts"], stage.notes["genre_coverage"]
    for kind in ("reviews", "books", "users"):
        if counts.get(kind):
            c = counts[kind]
            typer.echo(f"{kind}: read {c['lines_read']}, ingested {c['ingested']}, quarantined {c['quarantined']} "
                       f"(duplicates {c['duplicates']})")
    typer.echo(f"genres: {coverage['mapped_books']} of {coverage['reviewed_books']} reviewed books mapped "
               f"({100 * (coverage['mapped_share'] or 0):.1f}%)")
    for row in coverage["top_unmapped"][:5]:
        typer.echo(f"  unmapped: {row['path']} ({row['reviews']} reviews)")
    countries = ", ".join(f"{name}: {n}" for name, n in stage.notes["countries"].items())
    typer.echo(f"cohort: {stage.rows['cohort_users']} users ({countries})")


@app.command()
def profiles(recipe: str = RecipeOpt, out: Path = OutOpt, set_: list[str] = SetOpt):
    """Build every cohort user's profile (needs `ingest` in the same RUN_DIR)."""
    run_pipeline(recipe, out, set_, ["profiles"])


@app.command()
def scenarios(recipe: str = RecipeOpt, out: Path = OutOpt, set_: list[str] = SetOpt):
    """Generate the shared scenario pool: N scenario pairs per seed statement."""
    run_pipeline(recipe, out, set_, ["scenarios"])


@app.command()
def pairs(recipe: str = RecipeOpt, out: Path = OutOpt, set_: list[str] = SetOpt):
    """Assemble every user's preference pairs and export them for TRL (needs profiles + scenarios)."""
    run_pipeline(recipe, out, set_, ["pairs"])


@app.command()
def train(recipe: str = RecipeOpt, out: Path = OutOpt, set_: list[str] = SetOpt,
          resume: bool = typer.Option(False, help="continue from the last complete checkpoint in RUN_DIR/train")):
    """DPO-train one LoRA adapter on all users' pairs (TRL), then score the held-out split."""
    run_pipeline(recipe, out, set_, ["train"], resume_training=resume)


@app.command()
def generate(recipe: str = RecipeOpt, out: Path = OutOpt, set_: list[str] = SetOpt,
             adapter: Optional[Path] = typer.Option(None, help="LoRA adapter (default: RUN_DIR/train/gravity/adapter)")):
    """Write personalized book descriptions for every user's target books."""
    chosen = [f"llm.steps.generate.adapter={json.dumps(str(adapter.resolve()))}"] if adapter else []
    run_pipeline(recipe, out, [*(set_ or []), *chosen], ["generate"])


@app.command()
def run(recipe: str = RecipeOpt, out: Path = OutOpt, set_: list[str] = SetOpt,
        stage: list[str] = typer.Option(None, "--stage", help="run only this stage (repeatable; they run in "
                                        "pipeline order): ingest, profiles, scenarios, pairs, train, targets, "
                                        "generate, baselines, judge, report")):
    """The main job: every stage as one Prefect flow (the `gravity-pipeline` deployment's flow)."""
    from gravity_core.pipeline import selected_stages
    try:
        selected_stages(stage)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--stage") from None
    run_pipeline(recipe, out, set_, stage or None)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="a run directory that went through the judge stage"),
           recipe: str = RecipeOpt, set_: list[str] = SetOpt):
    """Table 2 metrics with bootstrap CIs, tests, judge reliability and costs: RUN_DIR/report/."""
    run_pipeline(recipe, run_dir, set_, ["report"])


@app.command()
def banks(recipe: str = RecipeOpt, set_: list[str] = SetOpt):
    """Print the knowledge banks' counts (seeds per source/topic, items per trait/style, genres)."""
    from tasks.bank_summary import load_bank_summary
    from tasks.environment import load_recipe
    typer.echo(json.dumps(load_bank_summary(load_recipe(recipe, set_, build_train=False).banks), indent=2))


@app.command()
def ledger(run_dir: Path = typer.Argument(..., help="a run directory")):
    """Model-call totals per stage and per user from RUN_DIR/ledger.parquet."""
    from gravity_core.ledger_report import totals
    from tasks.console import RunConsole, frame_table
    from tasks.llm.ledger import read_ledger
    frame = read_ledger(run_dir)
    if frame.is_empty():
        typer.echo(f"no ledger rows in {run_dir}")
        return
    console = RunConsole().console
    for title, table in totals(frame).items():
        console.print(frame_table(title, table))


@app.command()
def ablate(recipe: str = RecipeOpt, out: Path = OutOpt, set_: list[str] = SetOpt):
    """Table 5: retrain without each preference-data subset (evaluate.ablations), judge against the
    full model of the finished run in OUT, add the deltas to its report."""
    run_pipeline(recipe, out, set_, None, ablate=True)


@app.command()
def estimate(recipe: str = RecipeOpt, set_: list[str] = SetOpt,
             out: Optional[Path] = typer.Option(None, "--out", "-o", help="a run directory: use its ingest outputs "
                                                "and, when it has a ledger, compare with it"),
             steps: bool = typer.Option(False, "--steps", help="also show every kind of call (stage and prompt)")):
    """Cost before spending: model calls, tokens and dollars per stage for the recipe's cohort (no model call)."""
    from tasks.console import RunConsole
    from tasks.environment import load_recipe, prepare_process
    from tasks.estimate import estimate_run, print_estimate
    from tasks.llm.ledger import read_ledger
    with warnings.catch_warnings():  # library deprecation notices while the train section is checked
        warnings.simplefilter("default" if VERBOSE["on"] else "ignore")
        spec = load_recipe(recipe, set_)
    prepare_process(spec)
    print_estimate(estimate_run(spec, out), spec.run.name, RunConsole().console, read_ledger(out) if out else None,
                   steps)


@app.command()
def agreement(run_dir: Path = typer.Argument(..., help="a run directory with profiles"),
              truth: str = typer.Option("package:sample/ground_truth.json", help="planted ground truth JSON")):
    """Agreement of the run's profiles with planted ground truth (stances, OCEAN, genres, inferred demographics)."""
    from gravity_core.layout import RunLayout
    from gravity_core.profile.agreement import agreement as score
    from tasks.records_io import read_profiles
    from tasks.resources import resolve_path
    from tasks.rundir import write_text_atomic
    layout = RunLayout.of(run_dir)
    result = score(read_profiles(layout), json.loads(resolve_path(truth).read_text())["users"])
    write_text_atomic(layout.agreement, json.dumps(result, indent=2))
    typer.echo(json.dumps(result, indent=2))


def _exit_code(exc: BaseException) -> int:
    """2 for what the user can fix before running (recipe, files, keys), 1 for a failed run."""
    from gravity_core.recipe import RecipeError
    from gravity_core.records import RecordSchemaError
    from tasks.llm.secrets import MissingSecret
    from tasks.model_packages import ModelPackageError
    fixable = (RecipeError, FileNotFoundError, MissingSecret, RecordSchemaError, ModelPackageError)
    return 2 if isinstance(exc, fixable) else 1


def error_line(exc: BaseException) -> str:
    """One line saying what went wrong (the exception's own first line)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"error: {text[:400]}"


def main() -> None:
    from tasks.environment import quiet_env
    quiet_env()  # offline and quiet before any library reads its settings at import
    if "--verbose" in sys.argv[1:] or "-v" in sys.argv[1:]:
        VERBOSE["on"] = True
        sys.argv = [sys.argv[0]] + [a for a in sys.argv[1:] if a not in ("--verbose", "-v")]
    try:
        app(standalone_mode=False)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("error: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - every error ends as one line (traceback with --verbose)
        if isinstance(exc, typer.TyperException) and isinstance(getattr(exc, "exit_code", None), int):
            # a usage error (missing option, bad value): one line, exit 2 (typer's own click)
            known = {c.name or c.callback.__name__ for c in app.registered_commands}
            where = " ".join(["gravity", *[a for a in sys.argv[1:2] if a in known], "--help"])
            typer.echo(f"error: {exc.format_message()} (see {where})", err=True)
            sys.exit(exc.exit_code)
        if VERBOSE["on"]:
            import traceback
            traceback.print_exc()
        typer.echo(error_line(exc), err=True)
        sys.exit(_exit_code(exc))
