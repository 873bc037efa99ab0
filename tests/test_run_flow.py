"""Smoke run of `gravity run` (all stages as one flow) on the bundled sample cohort, with the
scripted fake for model calls and a few real DPO steps on the embedded model."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import polars as pl
import pytest

from gravity_core.recipe import parse_recipe
from tasks.llm.ledger import read_ledger

pytestmark = pytest.mark.slow
STAGES = ["ingest", "profiles", "scenarios", "pairs", "train", "generate"]


def test_gravity_run_on_the_sample_cohort_then_fully_cached(prefect_harness, tmp_path):
    from flows.run import gravity_run
    from tasks.stage import RunContext
    overrides = ["llm.default.backend=fake", "llm.default.fake_script=schema-fill", "llm.default.model=scripted",
                 "cohort.users_per_country=1", "banks.seed_limit=12", f"scenarios.pool_dir={tmp_path / 'pool'}",
                 "train.max_steps=2", "train.max_length=128", "train.heldout_eval_rows=4", "train.save_steps=10"]
    recipe = parse_recipe(Path("recipes/sample.yaml").read_text(), overrides)
    run_dir = tmp_path / "run"

    def run():
        ctx = RunContext(run_dir=str(run_dir), run_id=uuid.uuid4().hex[:8], recipe_name="smoke", recipe_hash="h")
        return gravity_run(recipe, ctx, return_state=True)

    assert run().is_completed()
    manifest = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert list(manifest) == STAGES and all(manifest[s]["status"] == "completed" for s in STAGES)
    for stage in manifest.values():
        assert all((run_dir / path).exists() for path in stage["artifacts"].values())
    assert manifest["ingest"]["rows"] == {"reviews": 384, "reviews_quarantined": 0, "books": 75, "books_quarantined": 0,
                                          "cohort_users": 4}
    assert pl.read_parquet(run_dir / "generate" / "generations.parquet").height == 4
    assert json.loads((run_dir / "train" / "heldout_eval.json").read_text())["preference"]["n"] == 4
    calls = read_ledger(run_dir).height

    assert run().is_completed()
    again = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert all(again[s]["model_calls"]["made"] == 0 for s in STAGES)
    assert again["train"]["seconds"] < 5  # served from the task cache, not retrained
    assert read_ledger(run_dir).height == calls
