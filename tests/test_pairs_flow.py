"""Scenarios and pairs flows end to end with the scripted fake, exported for TRL."""
from __future__ import annotations

import json

import polars as pl
import pytest

from tests.test_profiles_flow import ctx, recipe, write_ingest
from tasks.llm.ledger import read_ledger

pytestmark = pytest.mark.slow


def _run(rec, run_dir):
    from flows.pairs import pairs_flow
    from flows.profiles import profiles_flow
    from flows.scenarios import scenarios_flow
    assert profiles_flow(rec, ctx(run_dir), return_state=True).is_completed()
    assert scenarios_flow(rec, ctx(run_dir), return_state=True).is_completed()
    return pairs_flow(rec, ctx(run_dir))


def test_pool_pairs_and_trl_export(prefect_harness, tmp_path):
    from datasets import load_from_disk
    from trl.data_utils import is_conversational
    run_dir = tmp_path / "run"
    write_ingest(run_dir)
    rec = recipe(tmp_path, seeds=10)
    result = _run(rec, run_dir)
    pool = pl.read_parquet(run_dir / "scenarios" / "pool.parquet")
    assert pool.height == 20 and pool["seed_id"].n_unique() == 10
    assert (tmp_path / "pool" / f"{pool['pool_version'][0]}.parquet").exists()
    pairs = pl.read_parquet(run_dir / "pairs" / "pairs.parquet")
    assert set(pairs["facet"]) == {"interest-category", "interest-summary", "value", "personality"}
    assert pairs.filter(pl.col("facet") == "personality").group_by("user_id").len()["len"].to_list() == [20] * 4
    stances = pl.read_parquet(run_dir / "profiles" / "stances.parquet")
    expected_values = stances.filter(pl.col("stance") != "neutral").height * 2
    assert pairs.filter(pl.col("facet") == "value").height == expected_values
    reviewed = pl.read_parquet(run_dir / "ingest" / "reviews.parquet").select("user_id", "parent_asin")
    summary = pairs.filter(pl.col("facet") == "interest-summary").with_columns(
        pl.col("source_id").str.split(">").list.first().alias("parent_asin"))
    assert summary.join(reviewed, on=["user_id", "parent_asin"]).height == 0  # never a reviewed book
    data = load_from_disk(str(run_dir / "pairs" / "hf"))
    assert set(data) == {"train", "eval", "heldout"} and data["heldout"].num_rows > 0
    row = data["train"][0]
    assert is_conversational(row) and row["prompt"][0]["role"] == "system"
    heldout_keys = set(pairs.filter(pl.col("split") == "heldout")["heldout_key"])
    assert not heldout_keys & set(pairs.filter(pl.col("split") != "heldout")["heldout_key"].drop_nulls())
    manifest = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert manifest["pairs"]["rows"]["pairs"] == pairs.height
    assert set(manifest["pairs"]["notes"]["per_user"]) == {"u0", "u1", "u2", "u3"}
    assert result["per_facet"]["value"] == expected_values

    calls = read_ledger(run_dir).height
    from flows.scenarios import scenarios_flow
    assert scenarios_flow(rec, ctx(run_dir), return_state=True).is_completed()
    assert read_ledger(run_dir).height == calls  # the pool is reused, no new calls


def test_ablation_switch_drops_value_pairs(prefect_harness, tmp_path):
    run_dir = tmp_path / "run"
    write_ingest(run_dir)
    result = _run(recipe(tmp_path, seeds=4).model_copy(
        update={"pairs": recipe(tmp_path).pairs.model_copy(update={"drop_facets": ["value"], "drop_traits": ["openness"]})}),
        run_dir)
    assert "value" not in result["per_facet"]
    pairs = pl.read_parquet(run_dir / "pairs" / "pairs.parquet")
    assert not pairs["source_id"].str.starts_with("O-").any()
