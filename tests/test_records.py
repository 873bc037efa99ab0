"""Typed, versioned records across stages: written with an explicit schema, read back typed, and a
file of another schema version is refused with a clear error."""
from __future__ import annotations

import json

import polars as pl
import pytest

from gravity_core.layout import RunLayout
from gravity_core.records import Generation, PreferencePair, RecordSchemaError, Verdict
from tasks.records_io import read_frame, read_profiles, read_records, write_frame, write_records


def generation(**over) -> Generation:
    fields = dict(user_id="u1", parent_asin="B1", method="gravity", title="T", genre="romance", original="o",
                  generated="g g g", profile_version="p", model="fake/m", adapter=None, prompt_version="1")
    return Generation(**{**fields, **over})


def test_generations_and_verdicts_round_trip_typed(tmp_path):
    rows = [generation(), generation(user_id="u2", method="lamp", adapter="a@1")]
    write_records(rows, Generation, tmp_path / "g.parquet")
    assert read_records(tmp_path / "g.parquet", Generation) == rows
    verdicts = [Verdict(user_id="u1", parent_asin="B1", kind="ranking", judge_model="j", ordering=1,
                        candidates=["gravity", "original"], ranking=["original", "gravity"], prompt_version="1"),
                Verdict(user_id="u1", parent_asin="B1", kind="score", judge_model="j", method="gravity", score=4,
                        prompt_version="1")]
    write_records(verdicts, Verdict, tmp_path / "v.parquet")
    assert read_records(tmp_path / "v.parquet", Verdict) == verdicts
    assert pl.read_parquet(tmp_path / "v.parquet").schema["candidates"] == pl.List(pl.String)


def test_an_unknown_schema_version_fails_clearly(tmp_path):
    path = tmp_path / "g.parquet"
    write_records([generation()], Generation, path)
    pl.read_parquet(path).with_columns(pl.lit("generation-v9").alias("schema_version")).write_parquet(path)
    with pytest.raises(RecordSchemaError, match="schema version 'generation-v9'.*re-run"):
        read_records(path, Generation)


def test_a_file_without_a_version_or_with_a_wrong_column_fails(tmp_path):
    path = tmp_path / "x.parquet"
    pl.DataFrame({"user_id": ["u"]}).write_parquet(path)
    with pytest.raises(RecordSchemaError, match="no schema_version"):
        read_frame(path, Generation)
    write_records([generation()], Generation, path)
    pl.read_parquet(path).drop("method").write_parquet(path)
    with pytest.raises(RecordSchemaError, match="method"):
        read_frame(path, Generation)


def test_a_pairs_frame_is_stamped_and_cast_to_the_pair_schema(tmp_path):
    turn = [{"role": "assistant", "content": "x"}]
    row = {"pair_id": "u|value|s#0", "user_id": "u", "facet": "value", "source_id": "s#0", "seed_id": "wvs-001",
           "trait": None, "heldout_key": "s#0", "task": "t", "chosen": "a", "rejected": "b", "profile_version": "p",
           "system": "s", "prompt_text": "t", "pool_version": "pool", "prompt_version": "1", "split": "train",
           "prompt": [{"role": "user", "content": "t"}], "chosen_msgs": turn, "rejected_msgs": turn}
    assert write_frame(pl.DataFrame([row]), PreferencePair, tmp_path / "pairs.parquet") == 1
    back = read_frame(tmp_path / "pairs.parquet", PreferencePair)
    assert back["schema_version"].to_list() == [PreferencePair.SCHEMA] and back["seed_id"][0] == "wvs-001"
    PreferencePair.model_validate(back.row(0, named=True))


def test_profiles_of_another_schema_version_are_refused(tmp_path):
    layout = RunLayout.of(tmp_path)
    layout.profile_users.mkdir(parents=True)
    layout.profile_json("u1").write_text(json.dumps({"schema_version": "profile-v1", "user_id": "u1"}))
    with pytest.raises(RecordSchemaError, match="profile-v1.*re-run the profiles stage"):
        read_profiles(layout)


def test_no_profiles_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the profiles stage first"):
        read_profiles(RunLayout.of(tmp_path))
