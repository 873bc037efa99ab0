"""The profile flow with the scripted fake: fan-out, failure isolation, caches across runs."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import polars as pl
import pytest

from gravity_core.profile.facets import expected_calls
from gravity_core.recipe import parse_recipe
from tasks.llm.fake import register_script, schema_fill
from tasks.llm.ledger import read_ledger

pytestmark = pytest.mark.slow
GENRES = ["mystery_thriller", "romance", "fantasy", "self_help"]


def _fail_marked_user(request):
    if request.output_schema and any("FAILME" in m.content for m in request.messages):
        return "I would rather not answer in JSON."
    return schema_fill(request)


register_script("fail-marked-user", _fail_marked_user)


@pytest.fixture(autouse=True)
def own_task_cache(prefect_harness, tmp_path):
    """Task results (and so Prefect's cache) per test: these tests count the calls a run makes,
    which must not depend on what another test of the same process ran first."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: str(tmp_path / "prefect-results")}):
        yield


def write_ingest(run_dir: Path, n_users: int = 4, marked: str | None = None) -> None:
    ingest = run_dir / "ingest"
    ingest.mkdir(parents=True)
    reviews = []
    for u in range(n_users):
        for i in range(12):
            text = f"User {u} liked book {i}; a story of family and courage." + (" FAILME" if f"u{u}" == marked else "")
            reviews.append({"review_id": f"r{u}-{i}", "user_id": f"u{u}", "parent_asin": f"B{i % 8}",
                            "rating": 5.0, "title": "Good", "text": text, "timestamp": 1_600_000_000_000 + i})
    pl.DataFrame(reviews).write_parquet(ingest / "reviews.parquet")
    asins = [f"B{i}" for i in range(12)]
    pl.DataFrame({"parent_asin": asins, "title": [f"Book {i}" for i in range(12)],
                  "genre": [GENRES[i % 4] for i in range(8)] + ["horror", "cookbooks", "history", "mystery_thriller"],
                  "description": [f"A gripping story number {i}." for i in range(12)],
                  "average_rating": [4.5] * 12}).write_parquet(ingest / "books.parquet")
    users = pl.DataFrame({"user_id": [f"u{u}" for u in range(n_users)], "country": ["USA", "Brazil", "Japan", "India"][:n_users],
                          "age": [25, None, 70, 40][:n_users], "gender": ["female", "male", None, "male"][:n_users]},
                         schema={"user_id": pl.String, "country": pl.String, "age": pl.Int64, "gender": pl.String})
    users.write_parquet(ingest / "users.parquet")
    users.select("user_id", "country").with_columns(pl.lit("given").alias("country_source"), pl.lit(12).alias("n_reviews")
                                                    ).write_parquet(ingest / "cohort.parquet")


def recipe(tmp_path, script="schema-fill", seeds=30, k=25, extra=""):
    text = f"""
data: {{reviews: [x], meta: [y]}}
banks: {{seed_limit: {seeds}}}
scenarios: {{pairs_per_seed: 2, pool_dir: "{tmp_path / 'pool'}"}}
pairs: {{items_per_trait: 4, heldout_fraction: 0.2, eval_fraction: 0.2}}
{extra}
llm: {{default: {{backend: fake, fake_script: {script}, model: scripted}}, cache_dir: "{tmp_path / 'cache'}"}}
profiles: {{values_batch_size: {k}}}
"""
    return parse_recipe(text)


def ctx(run_dir):
    from tasks.stage import RunContext
    return RunContext(run_dir=str(run_dir), run_id=uuid.uuid4().hex[:8], recipe_name="t", recipe_hash="h")


def test_profiles_for_every_user_then_fully_cached(prefect_harness, tmp_path):
    from flows.profiles import profiles_flow
    run_dir = tmp_path / "run"
    write_ingest(run_dir)
    rec = recipe(tmp_path)
    state = profiles_flow(rec, ctx(run_dir), return_state=True)
    assert state.is_completed(), state.message
    profiles = pl.read_parquet(run_dir / "profiles" / "profiles.parquet")
    assert profiles.height == 4 and profiles["profile_version"].n_unique() == 4
    stances = pl.read_parquet(run_dir / "profiles" / "stances.parquet")
    assert stances.group_by("user_id").len()["len"].to_list() == [30] * 4
    assert set(stances["stance"]) <= {"support", "no support", "neutral"}
    profile = json.loads((run_dir / "profiles" / "users" / "u1.json").read_text())
    assert profile["demographics"]["sources"]["age"] == "inferred:llm" and profile["demographics"]["age_bin"]
    assert profile["demographics"]["sources"]["country"] == "given"  # a given country is never re-inferred
    assert profile["provenance"]["prompts"]["profile_values"] and profile["provenance"]["review_ids"]
    ledger = read_ledger(run_dir)
    per_user = ledger.filter(pl.col("stage") == "profiles.values").group_by("user_id").len()
    assert per_user["len"].to_list() == [expected_calls(30, 25)] * 4
    manifest = json.loads((run_dir / "manifest.json").read_text())["stages"]["profiles"]
    assert manifest["status"] == "completed" and manifest["model_calls"]["made"] == ledger.height

    second = profiles_flow(rec, ctx(run_dir), return_state=True)
    assert second.is_completed()
    assert read_ledger(run_dir).height == ledger.height  # no new calls at all
    again = json.loads((run_dir / "manifest.json").read_text())["stages"]["profiles"]
    assert again["model_calls"] == {"made": 0, "cached": 0}


def test_one_failing_user_is_isolated_and_reported(prefect_harness, tmp_path):
    from flows.profiles import profiles_flow
    run_dir = tmp_path / "run"
    write_ingest(run_dir, marked="u2")
    state = profiles_flow(recipe(tmp_path, script="fail-marked-user", seeds=10, k=5), ctx(run_dir), return_state=True)
    assert state.is_failed() and "1 of 4" in state.message
    assert pl.read_parquet(run_dir / "profiles" / "profiles.parquet")["user_id"].to_list() == ["u0", "u1", "u3"]
    failures = pl.read_parquet(run_dir / "profiles" / "failures.parquet")
    assert failures["user_id"].to_list() == ["u2"] and "invalid output" in failures["reason"][0]
    quarantine = pl.read_parquet(run_dir / "quarantine" / "profiles_model_outputs.parquet")
    assert set(quarantine["user_id"]) == {"u2"} and quarantine["raw_text"][0].startswith("I would rather")
    # Invalid output is never retried by Prefect (it would replay the same cached replies): each
    # failed item is quarantined once and counted once in the validity figures.
    assert quarantine.height == quarantine.select("stage", "user_id", "item_id").n_unique()
    assert quarantine.height == 1  # demographics failed for u2; its other facets were never asked
    manifest = json.loads((run_dir / "manifest.json").read_text())["stages"]["profiles"]
    assert manifest["status"] == "failed" and manifest["failures"][0]["item"] == "u2"
    # u2: its demographics call (the failed item); u0, u1, u3: 2 value batches + value summary +
    # personality + user summary each; u1 alone also had an age to infer.
    assert manifest["notes"]["structured_items"] == 1 + 3 * 5 + 1


def test_batched_profiles_equal_the_per_user_ones_in_fewer_task_runs(prefect_harness, tmp_path):
    """`run.users_per_task` (large cohorts): the same profiles and stances from one task run per
    batch of users; failures are still per user."""
    from flows.profiles import profiles_flow
    one, batched = tmp_path / "one", tmp_path / "batched"
    write_ingest(one)
    write_ingest(batched)
    assert profiles_flow(recipe(tmp_path, seeds=10, k=5), ctx(one), return_state=True).is_completed()
    rec = recipe(tmp_path, seeds=10, k=5, extra="cohort: {min_reviews: 1}").model_copy(deep=True)
    rec.run.users_per_task = 3
    state = profiles_flow(rec, ctx(batched), return_state=True)
    assert state.is_completed(), state.message
    for name in ("profiles.parquet", "stances.parquet"):
        a, b = (pl.read_parquet(d / "profiles" / name) for d in (one, batched))
        assert a.drop("profile_version", strict=False).equals(b.drop("profile_version", strict=False))
    manifest = json.loads((batched / "manifest.json").read_text())["stages"]["profiles"]
    assert manifest["notes"]["users_per_task"] == 3 and manifest["rows"]["profiles"] == 4

    failing = tmp_path / "failing"
    write_ingest(failing, marked="u2")
    rec = recipe(tmp_path, script="fail-marked-user", seeds=10, k=5)
    rec.run.users_per_task = 2
    state = profiles_flow(rec, ctx(failing), return_state=True)
    assert state.is_failed() and "1 of 4" in state.message
    assert pl.read_parquet(failing / "profiles" / "profiles.parquet")["user_id"].to_list() == ["u0", "u1", "u3"]
    assert pl.read_parquet(failing / "profiles" / "failures.parquet")["user_id"].to_list() == ["u2"]
