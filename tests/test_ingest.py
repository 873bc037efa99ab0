"""Ingest: validation reasons, line handling, duplicates, formats and the ingested + quarantined invariant."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from gravity_core import ingest
from gravity_core.ingest import validate_book, validate_review, validate_user
from gravity_core.ingest_batch import parse_jsonl_lines
from tasks.bank_io import load_genre_taxonomy
from tasks.ingest_io import ingest_files, read_lines

FIXTURES = Path(__file__).parent / "fixtures" / "ingest"


def review(**overrides) -> dict:
    base = {"rating": 4.0, "title": "Fine", "text": "A good read.", "images": [], "asin": "A1",
            "parent_asin": "P1", "user_id": "U1", "timestamp": 1588687728923,
            "helpful_vote": 1, "verified_purchase": True}
    return {k: v for k, v in {**base, **overrides}.items() if v is not ...}


def jsonl(*objs: object) -> str:
    return "\n".join(o if isinstance(o, str) else json.dumps(o) for o in objs) + "\n"


@pytest.fixture(scope="module")
def taxonomy():
    return load_genre_taxonomy()


def run_ingest(tmp_path: Path, taxonomy, reviews, meta=None, users=None, **kw):
    meta = meta if meta is not None else FIXTURES / "meta.jsonl"
    return ingest_files(reviews, meta, users, tmp_path / "out", taxonomy, **kw)


def read_out(tmp_path: Path, name: str) -> pl.DataFrame:
    return pl.read_parquet(tmp_path / "out" / f"{name}.parquet")


# --- pure validation -------------------------------------------------------------------------

@pytest.mark.parametrize("obj, reason", [
    (["not", "an", "object"], "not a JSON object"),
    ("a string", "not a JSON object"),
    (review(user_id=...), "missing user_id"),
    (review(user_id=None), "missing user_id"),
    (review(user_id=42), "user_id is not a string"),
    (review(text=...), "missing text"),
    (review(text="   <br/> "), "blank text"),
    (review(text=["a", "list"]), "text is not a string"),
    (review(parent_asin=..., asin=...), "missing parent_asin"),
    (review(rating=...), "missing rating"),
    (review(rating=7.0), "rating 7.0 outside 1-5"),
    (review(rating=0), "rating 0.0 outside 1-5"),
    (review(rating="5"), "rating is not a number"),
    (review(rating=True), "rating is not a number"),
    (review(timestamp=...), "missing timestamp"),
    (review(timestamp="2020-05-05"), "timestamp is not an integer"),
    (review(timestamp=1.5), "timestamp is not an integer"),
    (review(helpful_vote="many"), "helpful_vote is not an integer"),
    (review(verified_purchase="yes"), "verified_purchase is not a boolean"),
    (review(images="x.jpg"), "images is not a list"),
    (review(title=3), "title is not a string"),
])
def test_bad_reviews_get_a_reason(obj, reason):
    assert validate_review(obj) == reason


@pytest.mark.parametrize("raw, clean", [
    ("one<br>two", "one\ntwo"),
    ("one<BR/>two", "one\ntwo"),
    ("one<br />two<Br>three", "one\ntwo\nthree"),
    ("  <b>bold</b> and <i>italic</i>  ", "bold and italic"),
    ("fish &amp; chips <3", "fish & chips <3"),
])
def test_html_line_breaks_and_tags_in_text(raw, clean):
    assert validate_review(review(text=raw))["text"] == clean


def test_optional_fields_may_be_absent():
    row = validate_review(review(asin=..., images=..., helpful_vote=..., verified_purchase=..., title=...))
    assert row["asin"] == "P1" and row["n_images"] == 0
    assert row["title"] is None and row["helpful_vote"] is None and row["verified_purchase"] is None
    assert validate_review(review(parent_asin=..., asin="A9"))["parent_asin"] == "A9"


def test_review_id_is_stable_and_content_based():
    first, again = validate_review(review()), validate_review(review(helpful_vote=9))
    assert first["review_id"] == again["review_id"] and len(first["review_id"]) == 16
    assert validate_review(review(text="Another text."))["review_id"] != first["review_id"]


@pytest.mark.parametrize("price, parsed", [
    (12.99, 12.99), (8, 8.0), ("$12.99", 12.99), ("$1,299.00", 1299.0), ("£5 - £9", 5.0),
    (None, None), ("", None), ("—", None), ("None", None),
])
def test_book_price_parsing(price, parsed):
    row = validate_book({"parent_asin": "P1", "title": "T", "price": price})
    assert row["price"] == parsed


def test_book_normalisation():
    row = validate_book({"parent_asin": "P1", "title": "T", "author": {"name": "Ann", "about": []},
                         "description": ["First.", "<b>Second.</b>", " "], "categories": ["Books", "X"]})
    assert (row["author"], row["description"], row["categories"]) == ("Ann", "First.\nSecond.", ["Books", "X"])


@pytest.mark.parametrize("obj, reason", [
    ({"parent_asin": "P1"}, "missing title"),
    ({"title": "T"}, "missing parent_asin"),
    ({"parent_asin": "P1", "title": "T", "price": "cheap"}, "price 'cheap' is not a price"),
    ({"parent_asin": "P1", "title": "T", "categories": "Books > X"}, "categories is not a list of strings"),
    ({"parent_asin": "P1", "title": "T", "average_rating": 9}, "average_rating 9.0 outside 0-5"),
])
def test_bad_books_get_a_reason(obj, reason):
    assert validate_book(obj) == reason


@pytest.mark.parametrize("age, expected", [
    ("34", 34), (" 34 ", 34), ("34.0", 34), (34, 34), ("", None), (None, None),
    ("abc", "age 'abc' is not an integer"), ("33.5", "age 33.5 is not an integer"),
    ("7", "age 7 outside 10-110"), (111, "age 111 outside 10-110"), (True, "age True is not an integer"),
])
def test_user_age(age, expected):
    out = validate_user({"user_id": "U1", "country": "US", "age": age, "gender": ""})
    assert (out["age"] if isinstance(out, dict) else out) == expected


def test_user_without_id_or_with_surplus_csv_fields():
    assert validate_user({"user_id": "", "country": "US"}) == "blank user_id"
    assert validate_user({"country": "US"}) == "missing user_id"
    assert validate_user({"user_id": "U1", None: ["extra"]}) == "row has more fields than the header"


# --- line handling ---------------------------------------------------------------------------

def test_bom_crlf_and_blank_lines():
    lines = [(1, "\ufeff" + json.dumps(review()) + "\r\n"), (2, "  \r\n"), (3, json.dumps(review(text="b")) + "\r")]
    batch = parse_jsonl_lines(lines, "review", "r.jsonl")
    assert [r["line_no"] for r in batch.rows] == [1, 3] and batch.quarantine == []


@pytest.mark.parametrize("line", ["{not json}", '{"user_id": "U1", "text": "cut of', "[1, 2"])
def test_malformed_and_truncated_json_is_quarantined(line):
    batch = parse_jsonl_lines([(1, json.dumps(review())), (2, line)], "review", "r.jsonl")
    (bad,) = batch.quarantine
    assert bad["line_no"] == 2 and bad["reason"].startswith("invalid JSON: ") and bad["raw_line"] == line
    assert bad["kind"] == "review" and bad["source_file"] == "r.jsonl"


def test_invalid_utf8_in_a_kept_field_is_quarantined(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(json.dumps(review(text="caf\u00e9")).replace("\\u00e9", "\udcff").encode(
        "utf-8", "surrogateescape") + b"\n" + json.dumps(review()).encode() + b"\n")
    batch = parse_jsonl_lines(read_lines(path), "review", path.name)
    assert [q["reason"] for q in batch.quarantine] == ["invalid UTF-8 in a kept field"]
    assert len(batch.rows) == 1


# --- files -----------------------------------------------------------------------------------

def test_fixture_ingest_counts_and_reasons(tmp_path, taxonomy):
    summary = run_ingest(tmp_path, taxonomy, FIXTURES / "reviews.jsonl", users=FIXTURES / "users.csv")
    assert summary.reviews.model_dump() == {"lines_read": 7, "ingested": 3, "quarantined": 4, "duplicates": 1}
    assert summary.books.model_dump() == {"lines_read": 5, "ingested": 4, "quarantined": 1, "duplicates": 0}
    assert summary.users.model_dump() == {"lines_read": 5, "ingested": 2, "quarantined": 3, "duplicates": 0}
    quarantine = read_out(tmp_path, "quarantine")
    assert quarantine.schema == ingest.QUARANTINE_SCHEMA
    got = set(quarantine.select("kind", "line_no", "reason").iter_rows())
    assert {("review", 4, "rating 7.0 outside 1-5"), ("review", 5, "missing user_id"),
            ("review", 7, "duplicate of line 1"), ("book", 4, "missing title"),
            ("user", 4, "age 'seven' is not an integer"), ("user", 5, "blank user_id"),
            ("user", 6, "age 7 outside 10-110")} <= got
    assert [r for r in got if r[0] == "review" and r[1] == 8][0][2].startswith("invalid JSON")


def test_parquet_outputs_have_the_schemas(tmp_path, taxonomy):
    run_ingest(tmp_path, taxonomy, FIXTURES / "reviews.jsonl", users=FIXTURES / "users.csv")
    reviews, books, users = (read_out(tmp_path, n) for n in ("reviews", "books", "users"))
    assert reviews.schema == ingest.REVIEW_SCHEMA
    assert books.schema == pl.Schema({**ingest.BOOK_SCHEMA, "genre": pl.String})
    assert users.schema == ingest.USER_SCHEMA
    assert reviews["text"][0] == "I could not put it down.\n\nThe ending made me cry."
    assert dict(books.select("parent_asin", "genre").iter_rows()) == {
        "0000000001": "literary_fiction", "0000000002": "fantasy", "0000000003": "history",
        "0000000005": "crafts_hobbies_home"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "books.parquet", "quarantine.parquet", "reviews.parquet", "users.parquet"]


@pytest.mark.parametrize("batch_lines", [1, 2, 3, 100_000])
def test_duplicates_kept_once_across_batches_and_files(tmp_path, taxonomy, batch_lines):
    (tmp_path / "a.jsonl").write_text(jsonl(review(), review(text="other"), review()))
    (tmp_path / "b.jsonl").write_text(jsonl(review(text="other"), review(user_id="U2")))
    summary = run_ingest(tmp_path, taxonomy, [tmp_path / "a.jsonl", tmp_path / "b.jsonl"],
                         batch_lines=batch_lines)
    assert summary.reviews.model_dump() == {"lines_read": 5, "ingested": 3, "quarantined": 2, "duplicates": 2}
    reasons = read_out(tmp_path, "quarantine").filter(kind="review").select("source_file", "line_no", "reason")
    assert sorted(reasons.iter_rows()) == [("a.jsonl", 3, "duplicate of line 1"),
                                           ("b.jsonl", 1, "duplicate of line 2 in a.jsonl")]
    assert read_out(tmp_path, "reviews")["line_no"].to_list() == [1, 2, 2]


def test_duplicate_books_kept_once(tmp_path, taxonomy):
    book = {"parent_asin": "P1", "title": "T", "categories": ["Books", "History"]}
    (tmp_path / "m.jsonl").write_text(jsonl(book, {**book, "title": "T2"}))
    summary = run_ingest(tmp_path, taxonomy, FIXTURES / "reviews.jsonl", meta=tmp_path / "m.jsonl")
    assert (summary.books.ingested, summary.books.duplicates) == (1, 1)
    assert read_out(tmp_path, "books")["title"].to_list() == ["T"]


def test_gz_input_matches_plain(tmp_path, taxonomy):
    gz = tmp_path / "reviews.jsonl.gz"
    gz.write_bytes(gzip.compress((FIXTURES / "reviews.jsonl").read_bytes()))
    plain = run_ingest(tmp_path / "plain", taxonomy, FIXTURES / "reviews.jsonl")
    packed = run_ingest(tmp_path / "gz", taxonomy, gz)
    assert packed.reviews == plain.reviews
    assert read_out(tmp_path / "gz", "reviews").drop("source_file").equals(
        read_out(tmp_path / "plain", "reviews").drop("source_file"))


def test_read_lines_numbers_every_physical_line(tmp_path):
    path = tmp_path / "x.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"a": 1}\r\n\n{"b": 2}'))
    assert list(read_lines(path)) == [(1, '{"a": 1}'), (2, ""), (3, '{"b": 2}')]


def test_parquet_input(tmp_path, taxonomy):
    rows = [review(), review(text="two", images=[{"large": "x"}]), review(user_id=None), review(rating=9.0)]
    pl.DataFrame(rows).write_parquet(tmp_path / "reviews.parquet")
    summary = run_ingest(tmp_path, taxonomy, tmp_path / "reviews.parquet", batch_lines=3)
    assert summary.reviews.model_dump() == {"lines_read": 4, "ingested": 2, "quarantined": 2, "duplicates": 0}
    bad = read_out(tmp_path, "quarantine").filter(kind="review")
    assert bad.select("line_no", "reason").rows() == [(3, "missing user_id"), (4, "rating 9.0 outside 1-5")]
    assert json.loads(bad["raw_line"][1])["rating"] == 9.0
    assert read_out(tmp_path, "reviews")["n_images"].to_list() == [0, 1]


def test_users_jsonl_with_bad_age(tmp_path, taxonomy):
    (tmp_path / "users.jsonl").write_text(jsonl(
        {"user_id": "U1", "country": "US", "age": 40, "gender": "male"},
        {"user_id": "U2", "country": "US", "age": "old"}, {"user_id": "U3", "age": 300}))
    summary = run_ingest(tmp_path, taxonomy, FIXTURES / "reviews.jsonl", users=tmp_path / "users.jsonl")
    assert (summary.users.ingested, summary.users.quarantined) == (1, 2)
    assert read_out(tmp_path, "users").rows() == [("U1", "US", 40, "male")]


def test_missing_input_file_names_the_path(tmp_path, taxonomy):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        run_ingest(tmp_path, taxonomy, FIXTURES / "reviews.jsonl", meta=missing)
    assert not (tmp_path / "out" / "reviews.parquet").exists()


@pytest.mark.parametrize("batch_lines", [1, 4, 100_000])
def test_invariant_ingested_plus_quarantined_equals_lines_read(tmp_path, taxonomy, batch_lines):
    reviews = tmp_path / "reviews.jsonl"
    shutil.copy(FIXTURES / "reviews.jsonl", reviews)
    with reviews.open("a") as handle:  # more of everything after the truncated line
        handle.write("\n\n" + jsonl(review(), review(), "{oops", review(rating=None), review(text="x")))
    summary = run_ingest(tmp_path, taxonomy, reviews, users=FIXTURES / "users.csv", batch_lines=batch_lines)
    non_blank = sum(1 for line in reviews.read_text().splitlines() if line.strip())
    quarantine = read_out(tmp_path, "quarantine")
    for kind, counts in (("review", summary.reviews), ("book", summary.books), ("user", summary.users)):
        assert counts.ingested + counts.quarantined == counts.lines_read
        assert quarantine.filter(kind=kind).height == counts.quarantined
    assert summary.reviews.lines_read == non_blank == 12
    assert read_out(tmp_path, "reviews").height == summary.reviews.ingested == 5


def test_truncated_gzip_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl(review(), review(text="b")).encode())[:-12])
    with pytest.raises(ValueError, match="cut.jsonl.gz"):
        list(read_lines(path))
    with pytest.raises(FileNotFoundError, match="absent.jsonl"):
        read_lines(tmp_path / "absent.jsonl")
