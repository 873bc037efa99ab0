"""Property-based tests of the parsers strangers' bytes and people's typing reach first.

Ingest (JSONL lines, decoded records, whole files): nothing escapes for any line content,
ingested + quarantined = lines read, every quarantine row has a reason and a line number,
kept rows fit the output schemas, valid records round-trip. Recipes: only RecipeError
escapes, for any text and any `--set` override; valid overrides land where they say.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from gravity_core.ingest import QUARANTINE_SCHEMA, ROW_SCHEMAS, clean_text, validate_book, validate_review
from gravity_core.ingest_batch import ParsedBatch, is_blank_line, parse_jsonl_lines, validate_records
from gravity_core.recipe import Recipe, RecipeError, apply_overrides, parse_recipe
from tasks.bank_io import load_genre_taxonomy
from tasks.ingest_io import ingest_files

FAST = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FILES = settings(max_examples=25, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                        HealthCheck.data_too_large])
RECIPES = {name: Path("recipes", f"{name}.yaml").read_text(encoding="utf-8") for name in ("sample", "paper")}
KINDS = ["review", "book", "user"]

# --- generators -------------------------------------------------------------------------------

ids = st.text(st.characters(min_codepoint=48, max_codepoint=90), min_size=1, max_size=12)
safe_text = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="<&"),
                    min_size=1, max_size=40).map(str.strip).filter(bool)
odd_numbers = st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324, 2**63, -(2**63) - 1,
                               10**30, 0, -1, 6, 1.5, True, False])
odd_strings = st.sampled_from(["$" + "9" * 400, "9" * 400, "", " ", "—", "nan", "inf", "$1,,2", "١٢٣", "１２",
                               "<br/>", "&amp;", "\ufeff", "\x00", "\udc80", "1e999", "-5", "34.0"])
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20),
                         odd_numbers)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)


@st.composite
def valid_review(draw) -> dict:
    """An Amazon Reviews 2023 review record that must be ingested as is."""
    record = {"rating": draw(st.sampled_from([1.0, 2.0, 3.0, 4.0, 5.0, 4, 2.5])), "title": draw(safe_text),
              "text": draw(safe_text), "images": draw(st.lists(st.just({"small_image_url": "x"}), max_size=2)),
              "asin": draw(ids), "parent_asin": draw(ids), "user_id": draw(ids),
              "timestamp": draw(st.integers(0, 2**62)), "helpful_vote": draw(st.integers(0, 10**6)),
              "verified_purchase": draw(st.booleans())}
    optional = draw(st.sets(st.sampled_from(["title", "images", "asin", "helpful_vote", "verified_purchase"])))
    return {k: v for k, v in record.items() if k not in optional}


@st.composite
def valid_book(draw) -> dict:
    return {"main_category": "Books", "title": draw(safe_text), "parent_asin": draw(ids),
            "author": draw(st.one_of(st.none(), st.fixed_dictionaries({"name": safe_text}))),
            "description": draw(st.lists(safe_text, max_size=3)), "categories": draw(st.lists(safe_text, max_size=4)),
            "average_rating": draw(st.floats(0, 5)), "rating_number": draw(st.integers(0, 10**9)),
            "price": draw(st.one_of(st.none(), st.floats(0, 1e6), st.integers(0, 10**6))), "store": draw(safe_text)}


@st.composite
def near_valid(draw, kind: str) -> object:
    """A valid record with a few fields dropped, retyped or set to odd values, or extra keys."""
    base = draw(valid_review() if kind == "review" else valid_book() if kind == "book" else
                st.fixed_dictionaries({"user_id": ids, "country": safe_text, "age": st.integers(10, 110),
                                       "gender": st.sampled_from(["female", "male"])}))
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(sorted(base) + ["extra", "images", "price", "author", "description"]))
        action = draw(st.sampled_from(["drop", "set", "odd", "odd"]))
        if action == "drop":
            base.pop(key, None)
        else:
            base[key] = draw(json_values if action == "set" else st.one_of(odd_numbers, odd_strings))
    return draw(st.one_of(st.just(base), json_values))


def dump(obj: object) -> str:
    return json.dumps(obj, allow_nan=True)


@st.composite
def jsonl_line(draw, kind: str) -> str:
    """One line as read from a file: near-valid JSON with disguises, or garbage of any kind."""
    record = dump(draw(near_valid(kind)))
    variants = [
        record,
        "\ufeff" + record, record + "\r", "  " + record + " \t",                       # BOM, CRLF, padding
        record[:-1] + ', "rating": 9}' if record.endswith("}") else record,                 # duplicate key
        '{"rating": 5, ' + record[1:] if record.startswith("{") and len(record) > 2 else record,
        record[: draw(st.integers(0, max(len(record) - 1, 0)))],                             # truncated
        draw(st.text(max_size=80)),                                                          # any text
        draw(st.binary(max_size=80)).decode("utf-8", "surrogateescape"),                     # invalid UTF-8
        record.replace('"', '"\\ud83d', 1),                                                  # lone surrogate escape
        "[" * draw(st.integers(500, 20_000)),                                                # deep nesting
        "{\"a\":" * 3000 + "1" + "}" * 3000,
        '{"rating": ' + "9" * draw(st.integers(300, 5000)) + "}",                            # huge number
        draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "null", "[]", "{}", '""', "0", "true"])),
    ]
    return draw(st.sampled_from(variants))


def check_batch(batch: ParsedBatch, line_nos: list[int], kind: str) -> None:
    """The invariants every batch keeps, whatever it was fed."""
    kept = [r["line_no"] for r in batch.rows]
    quarantined = [q["line_no"] for q in batch.quarantine]
    assert sorted(kept + quarantined) == sorted(line_nos), "ingested + quarantined = read, each line once"
    assert all(q["reason"] and isinstance(q["reason"], str) for q in batch.quarantine)
    assert all(isinstance(q["line_no"], int) for q in batch.quarantine)
    pl.from_dicts(batch.rows, schema=ROW_SCHEMAS[kind]) if batch.rows else None  # what _write_part does
    pl.from_dicts(batch.quarantine, schema=QUARANTINE_SCHEMA) if batch.quarantine else None
    for row in batch.rows:
        assert all(math.isfinite(v) for v in row.values() if isinstance(v, float))
        assert all(v.encode("utf-8") for v in row.values() if isinstance(v, str))
    for q in batch.quarantine:
        q["raw_line"].encode("utf-8")
        q["reason"].encode("utf-8")


# --- line parser and record validation --------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@FAST
@given(data=st.data())
def test_any_lines_are_ingested_or_quarantined(kind, data):
    lines = data.draw(st.lists(jsonl_line(kind), max_size=8))
    numbered = list(enumerate(lines, 1))
    batch = parse_jsonl_lines(numbered, kind, "f.jsonl")
    check_batch(batch, [n for n, line in numbered if not is_blank_line(line)], kind)


record_objects = st.recursive(
    st.one_of(json_scalars, st.binary(max_size=8), st.dates(), st.datetimes(), st.decimals(allow_nan=True),
              st.builds(object)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=10)


@pytest.mark.parametrize("kind", KINDS)
@FAST
@given(data=st.data())
def test_any_decoded_records_are_validated_or_quarantined(kind, data):
    """Parquet and CSV rows arrive as Python objects of any type (dates, bytes, decimals)."""
    objs = data.draw(st.lists(st.one_of(near_valid(kind), record_objects,
                                        st.dictionaries(st.sampled_from(["user_id", "text", "rating", "timestamp",
                                                                         "parent_asin", "title", "age", "price"]),
                                                        record_objects, max_size=6)), max_size=6))
    batch = validate_records(list(enumerate(objs, 2)), kind, "f.parquet")
    check_batch(batch, list(range(2, len(objs) + 2)), kind)


@FAST
@given(record=valid_review())
def test_valid_reviews_round_trip(record):
    batch = parse_jsonl_lines([(7, dump(record))], "review", "r.jsonl")
    assert batch.quarantine == [] and len(batch.rows) == 1
    row = batch.rows[0]
    assert (row["user_id"], row["parent_asin"], row["timestamp"]) == (
        record["user_id"], record["parent_asin"], record["timestamp"])
    assert row["rating"] == float(record["rating"]) and row["text"] == clean_text(record["text"])
    assert row["title"] == (clean_text(record["title"]) if "title" in record else None)
    assert row["n_images"] == len(record.get("images", []))
    assert row["asin"] == record.get("asin", record["parent_asin"]) and row["line_no"] == 7
    assert validate_review(record)["review_id"] == row["review_id"]  # stable, content-based


@FAST
@given(record=valid_book())
def test_valid_books_round_trip(record):
    row = validate_book(json.loads(dump(record)))
    assert isinstance(row, dict), row
    assert (row["parent_asin"], row["title"], row["categories"]) == (
        record["parent_asin"], record["title"], record["categories"])
    assert row["price"] == (None if record["price"] is None else float(record["price"]))
    assert row["author"] == (record["author"]["name"] if record["author"] else None)
    assert row["description"] == ("\n".join(record["description"]) or None)


# --- whole files ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def taxonomy():
    return load_genre_taxonomy()


def _encodable(line: str) -> str:
    """A line as a file can hold it: no inner newlines; lone surrogates only as escaped bytes."""
    line = line.replace("\n", " ").replace("\r", " ")
    try:
        line.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        line = line.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return line


def _assert_summary(out: Path, counts, n_read: int) -> None:
    assert counts.lines_read == n_read
    assert counts.ingested + counts.quarantined == counts.lines_read
    quarantine = pl.read_parquet(out / "quarantine.parquet")
    assert quarantine["reason"].null_count() == 0 and (quarantine["reason"].str.len_chars() > 0).all()
    assert quarantine["line_no"].null_count() == 0


@FILES
@given(review_lines=st.lists(jsonl_line("review"), max_size=6), book_lines=st.lists(jsonl_line("book"), max_size=4),
       batch_lines=st.sampled_from([1, 3, 100]))
def test_ingest_files_on_generated_jsonl(tmp_path_factory, taxonomy, review_lines, book_lines, batch_lines):
    review_lines = [_encodable(line) for line in review_lines]
    book_lines = [_encodable(line) for line in book_lines]
    tmp = tmp_path_factory.mktemp("jsonl")
    for name, lines in (("reviews.jsonl", review_lines), ("meta.jsonl", book_lines)):
        (tmp / name).write_bytes(b"".join(line.encode("utf-8", "surrogateescape") + b"\n" for line in lines))
    summary = ingest_files(tmp / "reviews.jsonl", tmp / "meta.jsonl", None, tmp / "out", taxonomy, batch_lines)
    _assert_summary(tmp / "out", summary.reviews, sum(not is_blank_line(line) for line in review_lines))
    _assert_summary(tmp / "out", summary.books, sum(not is_blank_line(line) for line in book_lines))
    assert pl.read_parquet(tmp / "out" / "reviews.parquet").height == summary.reviews.ingested


parquet_reviews = st.fixed_dictionaries({
    "user_id": st.one_of(st.none(), st.just(""), st.just("  "), ids),
    "text": st.one_of(st.none(), st.just("<br/>"), st.text(max_size=30)),
    "parent_asin": st.one_of(st.none(), ids),
    "rating": st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1.0, 5.0])),
    "timestamp": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
    "title": st.one_of(st.none(), st.text(max_size=20)),
    "verified_purchase": st.one_of(st.none(), st.booleans()),
})


@FILES
@given(rows=st.lists(parquet_reviews, max_size=8), as_datetime=st.booleans(), batch_lines=st.sampled_from([2, 100]))
def test_ingest_files_on_generated_parquet(tmp_path_factory, taxonomy, rows, as_datetime, batch_lines):
    tmp = tmp_path_factory.mktemp("parquet")
    schema = {"user_id": pl.String, "text": pl.String, "parent_asin": pl.String, "rating": pl.Float64,
              "timestamp": pl.Int64, "title": pl.String, "verified_purchase": pl.Boolean}
    frame = pl.DataFrame(rows, schema=schema)
    if as_datetime:  # Amazon's parquet exports carry datetimes; ingest turns them into epoch ms
        frame = frame.with_columns(pl.col("timestamp").clip(-(10**15), 10**15).cast(pl.Datetime("ms")))
    frame.write_parquet(tmp / "reviews.parquet")
    (tmp / "meta.jsonl").write_text(dump({"parent_asin": "P", "title": "T"}) + "\n")
    summary = ingest_files(tmp / "reviews.parquet", tmp / "meta.jsonl", None, tmp / "out", taxonomy, batch_lines)
    _assert_summary(tmp / "out", summary.reviews, len(rows))


def test_deeply_nested_line_is_quarantined_not_raised():
    """Found by the line fuzzer: json.loads raised RecursionError past ~1000 levels."""
    batch = parse_jsonl_lines([(1, "[" * 100_000), (2, dump({"a": 1}))], "review", "r.jsonl")
    assert [(q["line_no"], q["reason"]) for q in batch.quarantine] == [
        (1, "invalid JSON: nested too deeply"), (2, "missing user_id")]


def test_price_too_large_for_a_float_is_quarantined():
    """Found while writing the record fuzzer (odd_strings now covers it): a 400-digit price parsed
    to inf and was kept."""
    assert validate_book({"parent_asin": "P", "title": "T", "price": "$" + "9" * 400}).startswith("price ")


# --- recipes and overrides --------------------------------------------------------------------

def _key_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of the Recipe model (sections and leaves)."""
    paths = []
    for name, field in model.model_fields.items():
        paths.append(prefix + name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths += _key_paths(annotation, f"{prefix}{name}.")
    return paths


KEYS = _key_paths(Recipe)
yaml_values = st.one_of(
    st.text(max_size=30),                                                          # anything typed after '='
    json_values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()),  # well-formed YAML of any type
    st.sampled_from(["[", "{a: [}", ": :", "!!python/object:os.system {}", "&a [*a]", "*undefined", "'", "\t- x",
                     ".nan", "-.inf", "1e999", "0x1F", "0o17", "2020-01-01", "~", "yes", "- a\n- b", "[" * 5000]),
)


def _raises_only_recipe_error(call) -> Recipe | None:
    try:
        return call()
    except RecipeError as exc:
        assert str(exc)
        return None


@FAST
@given(key=st.one_of(st.sampled_from(KEYS), st.text(max_size=20)), value=yaml_values,
       recipe=st.sampled_from(list(RECIPES)))
def test_any_override_gives_a_recipe_or_a_recipe_error(key, value, recipe):
    parsed = _raises_only_recipe_error(lambda: parse_recipe(RECIPES[recipe], [f"{key}={value}"]))
    if parsed is not None:
        parsed.model_dump_json()  # whatever was accepted can be recorded in a manifest


@FAST
@given(override=st.text(max_size=40))
def test_any_override_string_gives_a_recipe_or_a_recipe_error(override):
    _raises_only_recipe_error(lambda: parse_recipe(RECIPES["sample"], [override]))


@FAST
@given(text=st.one_of(
    st.text(max_size=200), json_values.map(yaml.safe_dump),
    st.dictionaries(st.sampled_from(KEYS[:12] + ["data"]), json_values, max_size=5).map(yaml.safe_dump),
    st.sampled_from(["data: &a {reviews: [*a], meta: [x]}", "train: &a {x: *a}\ndata: {reviews: [x], meta: [x]}",
                     "a: " + "[" * 100_000, "\x00", "\ufeffdata: 1", "- 1\n- 2", "'unterminated"])))
def test_any_recipe_text_gives_a_recipe_or_a_recipe_error(text):
    _raises_only_recipe_error(lambda: parse_recipe(text))


@settings(FAST, max_examples=40)
@given(seed=st.integers(-(2**62), 2**62), name=safe_text.filter(lambda s: s.isprintable()),
       batch=st.integers(1, 150), recipe=st.sampled_from(list(RECIPES)))
def test_valid_overrides_land_and_recipes_round_trip(seed, name, batch, recipe):
    raw = yaml.safe_load(RECIPES[recipe])
    before = json.dumps(raw, sort_keys=True, default=str)
    overrides = [f"run.seed={seed}", f"run.name={json.dumps(name, ensure_ascii=False)}",
                 f"profiles.values_batch_size={batch}"]
    parsed = parse_recipe(RECIPES[recipe], overrides)
    assert (parsed.run.seed, parsed.run.name, parsed.profiles.values_batch_size) == (seed, name, batch)
    assert parse_recipe(yaml.safe_dump(parsed.model_dump(mode="json"))) == parsed
    apply_overrides(raw, overrides)
    assert json.dumps(raw, sort_keys=True, default=str) == before, "apply_overrides must not mutate its input"


@pytest.mark.parametrize("overrides, message", [
    (["run.name=["], "override 'run.name': invalid YAML"),
    (["train.x=" + "[" * 5000], "override 'train.x': invalid YAML"),
])
def test_bad_override_values_are_recipe_errors(overrides, message):
    """Found by the override fuzzer: a YAML error in a value escaped as yaml.ParserError."""
    with pytest.raises(RecipeError, match=message):
        parse_recipe(RECIPES["sample"], overrides)


@pytest.mark.parametrize("text", [
    "data: {reviews: [x], meta: [x]}\ntrain: {x: " + "[" * 400 + "]" * 400 + "}",   # loads, too deep to copy
    "data: {reviews: [x], meta: [x]}\ntrain: &a {x: *a}",                             # a cycle through an anchor
    "a: " + "[" * 100_000,
])
def test_pathological_recipe_text_is_a_recipe_error(text):
    """Found by the recipe fuzzer: RecursionError escaped, and a cyclic `train` was accepted."""
    with pytest.raises(RecipeError):
        parse_recipe(text, ["run.seed=1"])



def test_users_csv_with_a_huge_cell_is_quarantined(tmp_path, taxonomy):
    huge = "U" * 200_000
    (tmp_path / "users.csv").write_text(f"user_id,country,age,gender\n{huge},US,30,female\nU2,US,40,male\n")
    (tmp_path / "r.jsonl").write_text(dump({"user_id": "U2", "text": "t", "parent_asin": "P", "rating": 5,
                                            "timestamp": 1}) + "\n")
    (tmp_path / "m.jsonl").write_text(dump({"parent_asin": "P", "title": "T"}) + "\n")
    summary = ingest_files(tmp_path / "r.jsonl", tmp_path / "m.jsonl", tmp_path / "users.csv", tmp_path / "out",
                           taxonomy)
    assert summary.users.lines_read == 2 and summary.users.quarantined == 1 and summary.users.ingested == 1
    rejected = pl.read_parquet(tmp_path / "out" / "quarantine.parquet").filter(pl.col("kind") == "user")
    assert rejected["reason"].to_list() == ["unreadable CSV row: field larger than field limit (131072)"]
    assert rejected["line_no"].to_list() == [2]
