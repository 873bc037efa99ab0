"""Knowledge banks: the real files, parser errors, seed subsets and the TRAIT / Big5Chat mappings."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter

import polars as pl
import pytest

from gravity_core import bank_releases, banks
from gravity_core.banks import BankError
from tasks import bank_io

TRAITS = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")


@pytest.fixture(scope="module")
def seeds():
    return bank_io.load_seed_statements()


# --- the bundled files -----------------------------------------------------------------------

def test_real_seed_statements(seeds):
    assert len(seeds) == 150
    assert Counter(s.source for s in seeds) == {"hofstede": 10, "schwartz": 10, "wvs7": 130}
    prefixes = {"hofstede": r"hof-\d{2}", "schwartz": r"sch-\d{2}", "wvs7": r"wvs-\d{3}"}
    assert all(re.fullmatch(prefixes[s.source], s.id) for s in seeds)
    assert {s.topic for s in seeds} == {"culture", "ethics", "society", "politics", "morals", "religion"}


def test_real_personality_items():
    items = bank_io.load_personality_items()
    per_trait = Counter(i.trait for i in items)
    assert set(per_trait) == set(TRAITS) and min(per_trait.values()) >= 20
    assert {(i.trait, i.style) for i in items} == {(t, s) for t in TRAITS for s in ("scenario", "dialogue")}
    assert {i.source for i in items} == {"gravity-bank"}


def test_real_genre_taxonomy():
    taxonomy = bank_io.load_genre_taxonomy()
    assert taxonomy.version == "genres-v2" and len(taxonomy.genres) >= 9
    assert sum(g.user_study for g in taxonomy.genres) == 9


def test_bank_summary_counts(seeds):
    summary = banks.bank_summary(seeds, bank_io.load_personality_items(), bank_io.load_genre_taxonomy())
    assert summary["seeds"]["by_source"] == {"hofstede": 10, "schwartz": 10, "wvs7": 130}
    assert sum(summary["seeds"]["by_topic"].values()) == 150
    assert sum(summary["items"]["by_style"].values()) == summary["items"]["total"]
    assert summary["genres"]["user_study"] == 9


def test_bank_version_is_a_content_hash():
    text = bank_io.read_bank_text("seed_statements")
    assert banks.bank_version(text) == bank_io.load_bank_version("seed_statements")
    assert banks.bank_version(text.replace("\n", "\r\n")) == banks.bank_version(text)
    assert banks.bank_version(text + "\n{}") != banks.bank_version(text)
    assert re.fullmatch(r"[0-9a-f]{12}", banks.bank_version(text))


def test_load_from_a_path_and_missing_path(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text(json.dumps(SEED) + "\n")
    assert [s.id for s in bank_io.load_seed_statements(path)] == ["hof-01"]
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        bank_io.load_seed_statements(tmp_path / "nope.jsonl")


# --- parser errors ---------------------------------------------------------------------------

SEED = {"id": "hof-01", "source": "hofstede", "topic": "society", "construct": "Power distance",
        "statement": "Power should be shared."}


@pytest.mark.parametrize("second, message", [
    (SEED, r"line 3: field 'id': duplicate id 'hof-01' \(first on line 1\)"),
    ({**SEED, "id": "hof-02", "topic": "sports"}, r"line 3: field 'topic'"),
    ({**SEED, "id": "hof-02", "statement": "  "}, r"line 3: field 'statement'"),
    ({**SEED, "id": "hof-02", "colour": "red"}, r"line 3: field 'colour'"),
    ({k: v for k, v in SEED.items() if k != "source"} | {"id": "x"}, r"line 3: field 'source'"),
    ('{"id": "hof-02", ', r"line 3: invalid JSON"),
])
def test_seed_parse_errors_name_line_and_field(second, message):
    text = "\n".join([json.dumps(SEED), "", second if isinstance(second, str) else json.dumps(second)])
    with pytest.raises(BankError, match=message):
        banks.parse_seed_statements(text)


def test_personality_item_duplicate_id():
    item = {"id": "O-1", "trait": "openness", "style": "scenario", "situation": "s",
            "high_response": "h", "low_response": "l"}
    assert banks.parse_personality_items(json.dumps(item))[0].source == "gravity-bank"
    with pytest.raises(BankError, match=r"personality_items line 2: field 'id': duplicate"):
        banks.parse_personality_items(json.dumps(item) + "\n" + json.dumps(item))


GENRES = """version: v
genres:
  - id: a
    name: A
    user_study: true
    description: d
    match: [["X"]]
  - id: b
    name: B
    user_study: {user_study}
    description: d
    match: {match}
"""


@pytest.mark.parametrize("user_study, match, message", [
    ("sometimes", '[["Y"]]', r"genres line 10: field 'genres.1.user_study'"),
    ("false", "[]", r"genres line 12: field 'genres.1.match'"),
    ("false", '[["X"]]', r"match paths listed twice \[\['X'\]\]"),
])
def test_genre_parse_errors(user_study, match, message):
    with pytest.raises(BankError, match=message):
        banks.parse_genre_taxonomy(GENRES.format(user_study=user_study, match=match))


# --- seed subsets ----------------------------------------------------------------------------

def test_select_seeds_balances_sources_then_topics(seeds):
    chosen = banks.select_seeds(seeds, 30, seed=0)
    assert Counter(s.source for s in chosen) == {"hofstede": 10, "schwartz": 10, "wvs7": 10}
    wvs_topics = Counter(s.topic for s in chosen if s.source == "wvs7")
    assert len(wvs_topics) == 6 and max(wvs_topics.values()) - min(wvs_topics.values()) <= 1
    assert [s.id for s in chosen] == [s.id for s in seeds if s in chosen]  # bank order kept


def test_select_seeds_small_limit_spreads_over_sources(seeds):
    assert len({s.source for s in banks.select_seeds(seeds, 3, seed=5)}) == 3


def test_select_seeds_is_deterministic(seeds):
    assert banks.select_seeds(seeds, 40, seed=1) == banks.select_seeds(seeds, 40, seed=1)
    assert banks.select_seeds(seeds, 40, seed=1) != banks.select_seeds(seeds, 40, seed=2)


@pytest.mark.parametrize("limit", [None, 150, 1000])
def test_select_seeds_all(seeds, limit):
    assert banks.select_seeds(seeds, limit, seed=0) == seeds


def test_select_seeds_rejects_negative_limit(seeds):
    with pytest.raises(ValueError):
        banks.select_seeds(seeds, -1, seed=0)


# --- TRAIT and Big5Chat ----------------------------------------------------------------------

def trait_row(**overrides) -> dict:
    row = {"personality": "Openness", "situation": "A friend suggests an art class.", "query": "What do you do?",
           "response_high1": "Sign up.", "response_high2": "Ask about techniques.",
           "response_low1": "Decline.", "response_low2": "Stay home.", "split": "test"}
    return {**row, **overrides}


def test_trait_mapping():
    items, rejects = bank_releases.trait_rows_to_items([trait_row(), trait_row(personality="NEUROTICISM ")])
    assert rejects == [] and len(items) == 4
    first = items[0]
    assert (first.trait, first.style, first.source) == ("openness", "scenario", "trait")
    assert first.situation == "A friend suggests an art class. What do you do?"
    assert [(i.high_response, i.low_response) for i in items[:2]] == [("Sign up.", "Decline."),
                                                                     ("Ask about techniques.", "Stay home.")]
    assert items[2].trait == "neuroticism" and len({i.id for i in items}) == 4


@pytest.mark.parametrize("row, reason", [
    (trait_row(personality="Machiavellianism"), "trait 'Machiavellianism' is not a Big Five trait"),
    (trait_row(response_low2=""), "missing response_low2"),
    ({k: v for k, v in trait_row().items() if k != "query"}, "missing query"),
    ("not a row", "row is not an object"),
    (trait_row(), "duplicate of row 1"),
])
def test_trait_rejects(row, reason):
    items, rejects = bank_releases.trait_rows_to_items([trait_row(), row])
    assert len(items) == 2 and rejects == [banks.Reject(row_no=2, reason=reason)]


def b5c(text: str, level: str, trait: str = "extraversion", said: str = "Want to come to the party?") -> dict:
    return {"train_input": said, "train_output": text, "trait": trait, "level": level}


def test_big5chat_pairs_high_and_low():
    rows = [b5c("Yes! Count me in.", "high"), b5c("I'll pass.", "low"),
            b5c("Sure, sounds fun.", "high"), b5c("Maybe next time.", "LOW"),
            b5c("Absolutely.", "high", trait="Agreeableness")]
    items, rejects = bank_releases.big5chat_rows_to_items(rows)
    assert [(i.trait, i.high_response, i.low_response) for i in items] == [
        ("extraversion", "Yes! Count me in.", "I'll pass."), ("extraversion", "Sure, sounds fun.", "Maybe next time.")]
    assert items[0].situation == "Want to come to the party?"
    assert (items[0].style, items[0].source) == ("dialogue", "big5chat")
    assert rejects == [banks.Reject(row_no=5, reason="no opposite-level response for this train_input and trait")]
    assert 2 * len(items) + len(rejects) == len(rows)


@pytest.mark.parametrize("row, reason", [
    (b5c("Hm.", "medium"), "level 'medium' is not high or low"),
    (b5c("Hm.", "high", trait="humour"), "trait 'humour' is not a Big Five trait"),
    (b5c("", "high"), "missing train_output"),
])
def test_big5chat_rejects(row, reason):
    items, rejects = bank_releases.big5chat_rows_to_items([b5c("Yes!", "high"), b5c("No.", "low"), row])
    assert len(items) == 1 and rejects == [banks.Reject(row_no=3, reason=reason)]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ".csv"])
def test_load_releases_from_local_files(tmp_path, suffix):
    trait_rows = [trait_row(), trait_row(personality="Psychopathy")]
    b5c_rows = [b5c("Yes!", "high"), b5c("No.", "low")]
    for name, rows in (("trait", trait_rows), ("b5c", b5c_rows)):
        write_rows(tmp_path / f"{name}{suffix}", rows)
    items, rejects = bank_io.load_trait_release(tmp_path / f"trait{suffix}")
    assert len(items) == 2 and [r.row_no for r in rejects] == [2]
    items, rejects = bank_io.load_big5chat_release(tmp_path / f"b5c{suffix}")
    assert len(items) == 1 and rejects == []


def write_rows(path, rows: list[dict]) -> None:
    if path.suffix == ".parquet":
        pl.DataFrame(rows).write_parquet(path)
    elif path.suffix == ".csv":
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".json":
        path.write_text(json.dumps({"Openness": rows}))
    else:
        path.write_text("\n".join(json.dumps(r) for r in rows))


def test_select_seeds_always_keeps_included_ids():
    from gravity_core.banks import select_seeds
    from tasks.bank_io import load_seed_statements
    seeds = load_seed_statements()
    chosen = select_seeds(seeds, 30, 0, include=["wvs-001", "sch-01"])
    assert len(chosen) == 30 and {"wvs-001", "sch-01"} <= {s.id for s in chosen}
    with pytest.raises(ValueError, match="unknown seed"):
        select_seeds(seeds, 30, 0, include=["nope"])


# Every top-level category of the Amazon Books tree (Amazon Reviews 2023, meta_Books `categories`).
AMAZON_BOOKS_TOP_LEVEL = [
    "Arts & Photography", "Biographies & Memoirs", "Business & Money", "Calendars", "Children's Books",
    "Christian Books & Bibles", "Comics & Graphic Novels", "Computers & Technology", "Cookbooks, Food & Wine",
    "Crafts, Hobbies & Home", "Education & Teaching", "Engineering & Transportation", "Health, Fitness & Dieting",
    "History", "Humor & Entertainment", "Law", "LGBTQ+ Books", "Literature & Fiction", "Medical Books",
    "Mystery, Thriller & Suspense", "Parenting & Relationships", "Politics & Social Sciences", "Reference",
    "Religion & Spirituality", "Romance", "Science & Math", "Science Fiction & Fantasy", "Self-Help",
    "Sports & Outdoors", "Teen & Young Adult", "Test Preparation", "Travel",
]


@pytest.mark.parametrize("top", AMAZON_BOOKS_TOP_LEVEL)
def test_every_amazon_books_top_level_category_maps_to_a_genre(top):
    from gravity_core.cohort import assign_genres
    books = pl.DataFrame({"categories": [["Books", top], ["Books", top, "Some Subgenre", "Deeper"]]})
    genres = assign_genres(books, bank_io.load_genre_taxonomy()).get_column("genre").to_list()
    assert "unmapped" not in genres, f"{top} maps to no genre"


@pytest.mark.parametrize("path, genre", [
    (["Books", "Mystery, Thriller & Suspense", "Mystery"], "mystery_thriller"),
    (["Books", "Literature & Fiction", "Genre Fiction"], "literary_fiction"),
    (["Books", "Science Fiction & Fantasy", "Science Fiction"], "science_fiction"),
    (["Books", "Health, Fitness & Dieting", "Mental Health"], "self_help"),
    (["Books", "Teen & Young Adult", "Literature & Fiction"], "young_adult"),
])
def test_real_category_paths_map_to_the_expected_genre(path, genre):
    from gravity_core.cohort import assign_genres
    got = assign_genres(pl.DataFrame({"categories": [path]}), bank_io.load_genre_taxonomy())["genre"][0]
    assert got == genre
