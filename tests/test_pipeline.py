"""The deployable `gravity-pipeline` flow and the CLI on top of it: the sample cohort end to end
(scripted fake for model calls, real DPO steps), a quiet console, warm re-runs that call
nothing, a failing stage that stops the pipeline, and real Amazon files without a users file."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from tasks.llm.ledger import read_ledger

pytestmark = pytest.mark.slow
STAGES = ["ingest", "profiles", "scenarios", "pairs", "train", "targets", "generate", "baselines", "judge",
          "report"]
FAKE = ["llm.default.backend=fake", "llm.default.fake_script=schema-fill", "llm.default.model=scripted"]
SMALL = ["cohort.users_per_country=1", "banks.seed_limit=12", "train.max_steps=2", "train.max_length=128",
         "train.per_device_train_batch_size=1", "train.gradient_accumulation_steps=1",
         "train.heldout_eval_rows=4", "train.save_steps=10", "evaluate.train_overrides={}"]


def gravity(tmp_path: Path, *args: str, overrides: list[str] = ()) -> subprocess.CompletedProcess:
    """`gravity ARGS` in a fresh process, caches and pool under tmp_path."""
    sets = [f"llm.cache_dir={tmp_path / 'cache'}", f"scenarios.pool_dir={tmp_path / 'pool'}", *overrides]
    cmd = [sys.executable, "-c", "from flows.cli import main; main()", *args,
           *[a for s in sets for a in ("--set", s)]]
    env = {**os.environ, "COLUMNS": "160"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())["stages"]


def test_the_main_job_on_the_sample_then_fully_cached(tmp_path):
    run_dir = tmp_path / "run"
    cold = gravity(tmp_path, "run", "--out", str(run_dir), overrides=[*FAKE, *SMALL])
    assert cold.returncode == 0, cold.stderr[-2000:]
    lines = (cold.stdout + cold.stderr).splitlines()
    assert len(lines) <= 150 and "Traceback" not in cold.stdout + cold.stderr
    stages = manifest(run_dir)
    assert list(stages) == STAGES and all(stages[s]["status"] == "completed" for s in STAGES)
    for stage in stages.values():
        assert all((run_dir / path).exists() for path in stage["artifacts"].values())
    assert stages["ingest"]["rows"] == {"reviews": 384, "reviews_quarantined": 0, "books": 75,
                                        "books_quarantined": 0, "cohort_users": 4}
    assert pl.read_parquet(run_dir / "generate" / "gravity" / "generations.parquet").height == 4
    assert (run_dir / "train" / "gravity" / "adapter" / "adapter_config.json").exists()
    assert pl.read_parquet(run_dir / "evaluate" / "targets.parquet").height == 4  # one shared target per user
    for method in ("base_rewrite", "demo_based", "user_summary", "lamp", "triagent", "gravity_sft", "user_sft",
                   "prefalign"):
        assert pl.read_parquet(run_dir / "generate" / method / "generations.parquet").height == 4
    for method, kind in (("gravity_sft", "sft"), ("user_sft", "sft"), ("prefalign", "dpo")):
        card = (run_dir / "train" / method / "adapter" / "README.md").read_text()
        assert (run_dir / "train" / method / "adapter" / "adapter_config.json").exists() and kind.upper() in card
    prefalign = pl.read_parquet(run_dir / "pairs" / "prefalign.parquet")
    assert prefalign.height > 0 and prefalign["user_id"].n_unique() == 4
    assert stages["train"]["rows"]["user_sft_steps"] == 2 and stages["pairs"]["rows"]["prefalign_pairs"] == prefalign.height
    verdicts = pl.read_parquet(run_dir / "evaluate" / "verdicts.parquet")
    assert verdicts.filter(pl.col("kind") == "ranking").height == 4 * 2  # sample recipe: 2 orderings
    assert "Table 2" in (run_dir / "report" / "report.html").read_text()
    assert f"report: {run_dir / 'report' / 'report.html'}" in cold.stdout
    assert json.loads((run_dir / "train" / "gravity" / "heldout_eval.json").read_text())["preference"]["n"] == 4
    run_log = (run_dir / "logs" / "run.log").read_text()
    assert run_log  # Prefect's task logs went here, not to the console
    assert "RETURN_VALUE" not in run_log and "LOAD_GLOBAL" not in run_log  # no dill/datasets disassembly
    calls = read_ledger(run_dir).height

    warm = gravity(tmp_path, "run", "--out", str(run_dir), overrides=[*FAKE, *SMALL])
    assert warm.returncode == 0, warm.stderr[-2000:]
    again = manifest(run_dir)
    assert all(again[s]["model_calls"]["made"] == 0 for s in STAGES)
    assert again["train"]["seconds"] < 5  # served from the task cache, not retrained
    assert len((warm.stdout + warm.stderr).splitlines()) <= 40
    assert read_ledger(run_dir).height == calls
    assert any((tmp_path / "cache" / "prefect-results").iterdir())  # task results live beside the request cache

    ablate = gravity(tmp_path, "ablate", "--out", str(run_dir),
                     overrides=[*FAKE, *SMALL, "evaluate.ablations=[values_beliefs]"])
    assert ablate.returncode == 0, ablate.stderr[-2000:]
    sub = run_dir / "ablations" / "values_beliefs"
    assert set(pl.read_parquet(sub / "pairs" / "pairs.parquet")["facet"]) == {"interest-category", "interest-summary",
                                                                                "personality"}  # no value pairs
    assert (sub / "train" / "gravity" / "adapter" / "adapter_config.json").exists()
    assert not (sub / "train" / "user_sft").exists()  # an ablated run trains GRAVITY only
    table5 = pl.read_parquet(run_dir / "report" / "ablations.parquet")
    assert table5["ablation"].to_list() == ["values_beliefs"] and table5["n_users"].to_list() == [4]
    judged = pl.read_parquet(run_dir / "ablations" / "_judge" / "evaluate" / "verdicts.parquet")
    assert {"gravity", "ablate_values_beliefs", "original"} <= set(judged.explode("candidates")["candidates"])
    assert "values_beliefs" in (run_dir / "report" / "report.md").read_text()

    shutil.rmtree(tmp_path / "cache")  # README: delete the cache folder to start cold
    cold_again = gravity(tmp_path, "profiles", "--out", str(run_dir), overrides=[*FAKE, *SMALL])
    assert cold_again.returncode == 0, cold_again.stderr[-2000:]
    assert manifest(run_dir)["profiles"]["model_calls"]["made"] > 0  # no task result survived elsewhere


def test_a_stage_over_its_failure_tolerance_stops_the_pipeline(tmp_path):
    run_dir = tmp_path / "run"
    done = gravity(tmp_path, "run", "--out", str(run_dir),
                   overrides=[*FAKE, "llm.default.fake_script=refuse-values", *SMALL, "run.max_failed_fraction=0.25"])
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: stage profiles: 4 of 4 user profiles failed")
    assert "Traceback" not in done.stdout + done.stderr
    stages = manifest(run_dir)
    assert stages["profiles"]["status"] == "failed" and "scenarios" not in stages
    assert not read_ledger(run_dir).filter(pl.col("stage") == "scenarios").height  # nothing spent after the stop
    assert "profiles" in done.stdout and "failed" in done.stdout


def test_real_amazon_files_without_a_users_file(tmp_path):
    """Amazon Reviews 2023 has no demographics: the default recipe's per-country quota is skipped
    with one warning instead of a traceback."""
    run_dir = tmp_path / "run"
    done = gravity(tmp_path, "ingest", "--reviews", "package:sample/Books.jsonl", "--meta",
                   "package:sample/meta_Books.jsonl", "--out", str(run_dir))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "warning: no cohort user has a known country" in done.stdout
    assert "genres: 67 of 67 reviewed books mapped (100.0%)" in done.stdout
    assert "cohort: 16 users (country unknown: 16)" in done.stdout
    cohort = pl.read_parquet(run_dir / "ingest" / "cohort.parquet")
    assert cohort.height == 16 and cohort["country"].null_count() == 16


def test_inferred_countries_feed_the_quota_and_are_ledgered(prefect_harness, tmp_path):
    from flows.ingest import ingest_flow
    from tasks.environment import load_recipe, run_context
    recipe = load_recipe("sample", [*FAKE, "data.users=null", "cohort.country_source=inferred",
                                    "cohort.users_per_country=3", f"llm.cache_dir={tmp_path / 'cache'}"])
    ctx = run_context(recipe, tmp_path / "run")
    ingest_flow(recipe, ctx)
    cohort = pl.read_parquet(ctx.layout.cohort)
    assert set(cohort["country_source"]) == {"inferred:llm"}
    assert cohort.group_by("country").len()["len"].max() <= 3
    assert set(cohort["country"]) <= {"USA", "Brazil", "Japan", "India"}
    ledger = read_ledger(ctx.layout.root)
    assert ledger.filter(pl.col("stage") == "cohort.country").height == 16  # every candidate, once


def test_the_pipeline_parameters_render_as_a_form():
    """Prefect's UI builds the run form from this schema: every parameter is JSON with a description."""
    from flows.pipeline import gravity_pipeline
    schema = gravity_pipeline.parameters.model_dump()
    props = schema["properties"]
    assert set(props) == {"recipe", "overrides", "out", "stages", "cohort", "resume_training"}
    assert all(p.get("description") for p in props.values())
    cohort = schema["definitions"]["CohortFilter"]["properties"]
    assert all(p.get("description") for p in cohort.values())
    json.dumps(schema)


def test_an_endpoint_that_rejects_the_key_ends_in_one_clear_line(tmp_path, openai_server):
    """Every call answered 401: the run stops after the profiles stage with one line that says
    authentication failed and what to set; no traceback."""
    openai_server.queue = [(401, {"error": {"message": "bad key", "type": "invalid_request_error"}}, {})] * 200
    done = gravity(tmp_path, "run", "--out", str(tmp_path / "run"),
                   overrides=["llm.default.backend=openai", f"llm.default.base_url={openai_server.url}",
                              "llm.default.model=m", *SMALL])
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: stage profiles: 4 of 4 user profiles failed (") and "HTTP 401" in last
    assert "authentication failed: set a valid API key" in last and "Traceback" not in done.stdout + done.stderr
    assert len(openai_server.requests) <= 8  # a 401 is final: never retried
