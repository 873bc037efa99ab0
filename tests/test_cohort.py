"""Cohort selection, seeded per-country sampling, genre assignment and genre shares."""

from __future__ import annotations

import polars as pl
import pytest
from pydantic import ValidationError

from gravity_core.banks import parse_genre_taxonomy
from gravity_core.cohort import (
    CohortConfig, assign_genres, candidates, genre_coverage, select_cohort, to_infer, user_genre_shares,
)
from tasks.bank_io import load_genre_taxonomy


def reviews_for(counts: dict[str, int]) -> pl.LazyFrame:
    """One review row per (user, i); takes nothing else than user_id and parent_asin."""
    rows = [(user, f"P{i}") for user, n in counts.items() for i in range(n)]
    return pl.LazyFrame(rows, schema={"user_id": pl.String, "parent_asin": pl.String}, orient="row")


def many_users(n_per_country: int, countries=("US", "DE", "JP")) -> tuple[pl.LazyFrame, pl.DataFrame]:
    ids = [f"{c}-{i:03d}" for c in countries for i in range(n_per_country)]
    users = pl.DataFrame({"user_id": ids + ["nowhere-1"], "country": [i[:2] for i in ids] + [None]})
    return reviews_for({u: 60 for u in users["user_id"]}), users


@pytest.mark.parametrize("bad", [{"min_reviews": 0}, {"users_per_country": 0}, {"max_users": -1},
                                 {"countries": []}, {"min_review": 50}])
def test_config_validates(bad):
    with pytest.raises(ValidationError):
        CohortConfig(**bad)


def test_config_defaults_follow_the_paper():
    assert CohortConfig().min_reviews == 50


@pytest.mark.parametrize("min_reviews, expected", [(1, ["a", "b", "c"]), (3, ["b", "c"]), (50, ["c"]), (51, [])])
def test_min_reviews_filter(min_reviews, expected):
    cohort = select_cohort(reviews_for({"c": 50, "a": 1, "b": 3}), None, CohortConfig(min_reviews=min_reviews)).cohort
    assert cohort["user_id"].to_list() == expected
    assert cohort.columns == ["user_id", "country", "country_source", "n_reviews"]
    assert cohort["country"].null_count() == cohort.height


def test_countries_filter_and_country_join():
    users = pl.DataFrame({"user_id": ["a", "b", "c"], "country": ["US", "DE", None]})
    cfg = CohortConfig(min_reviews=1, countries=["US", "JP"])
    assert select_cohort(reviews_for({"a": 2, "b": 2, "c": 2}), users, cfg).cohort.rows() == [("a", "US", "given", 2)]


def test_per_country_sampling_is_seeded_and_deterministic():
    reviews, users = many_users(20)
    cfg = CohortConfig(users_per_country=5, seed=7)
    first, again = select_cohort(reviews, users, cfg).cohort, select_cohort(reviews, users, cfg).cohort
    assert first.equals(again)
    assert first.group_by("country").len().sort("country").rows() == [("DE", 5), ("JP", 5), ("US", 5)]
    assert first["user_id"].is_sorted() and "nowhere-1" not in first["user_id"].to_list()
    other = select_cohort(reviews, users, cfg.model_copy(update={"seed": 8})).cohort
    assert set(other["user_id"]) != set(first["user_id"])


def test_larger_sample_extends_the_smaller_one():
    reviews, users = many_users(20)
    small = select_cohort(reviews, users, CohortConfig(users_per_country=3, seed=1)).cohort
    large = select_cohort(reviews, users, CohortConfig(users_per_country=6, seed=1)).cohort
    assert set(small["user_id"]) < set(large["user_id"])


def test_funnel_counts_each_rule():
    reviews, users = many_users(10)
    reviews = pl.concat([reviews, reviews_for({"light-1": 3})])
    cfg = CohortConfig(users_per_country=4, max_users=10, seed=3)
    funnel = select_cohort(reviews, users, cfg).funnel
    assert funnel.select("rule", "n_before", "n_dropped", "n_after").rows() == [
        ("reviewers", 32, 0, 32), ("min_reviews", 32, 1, 31), ("no_country", 31, 1, 30),
        ("users_per_country", 30, 18, 12), ("max_users", 12, 2, 10)]
    assert select_cohort(reviews, users, cfg).cohort.height == 10


def test_without_any_country_the_country_rules_are_skipped_with_one_warning():
    """Real Amazon data has no users file: the default recipe must still select a cohort."""
    picked = select_cohort(reviews_for({"a": 60, "b": 70, "c": 1}), None, CohortConfig(users_per_country=2))
    assert picked.cohort["user_id"].to_list() == ["a", "b"]
    assert [r["rule"] for r in picked.funnel.to_dicts()] == ["reviewers", "min_reviews"]
    assert "\n" not in picked.warning and "per-country rules" in picked.warning and "users file" in picked.warning
    assert select_cohort(reviews_for({"a": 60}), None, CohortConfig()).warning is None


@pytest.mark.parametrize("source, expected", [("given", []), ("inferred", ["a", "b", "c"]),
                                              ("given_or_inferred", ["b", "c"])])
def test_which_candidates_need_an_inferred_country(source, expected):
    users = pl.DataFrame({"user_id": ["a", "b", "c", "d"], "country": ["US", None, None, None]})
    cfg = CohortConfig(min_reviews=50, users_per_country=1, country_source=source)
    cands = candidates(reviews_for({"a": 60, "b": 60, "c": 60, "d": 2}), users, cfg)
    assert to_infer(cands, cfg) == expected
    assert to_infer(cands, cfg.model_copy(update={"users_per_country": None})) == []


def test_inferred_countries_feed_the_quota_and_never_override_a_given_one():
    users = pl.DataFrame({"user_id": ["a", "b", "c", "d"], "country": ["US", None, None, "JP"]})
    inferred = pl.DataFrame({"user_id": ["a", "b", "c", "d"], "country": ["BR", "JP", None, "US"]})
    reviews = reviews_for({u: 60 for u in "abcd"})
    mixed = select_cohort(reviews, users, CohortConfig(users_per_country=5, country_source="given_or_inferred"),
                          inferred).cohort
    assert mixed.select("user_id", "country", "country_source").rows() == [
        ("a", "US", "given"), ("b", "JP", "inferred:llm"), ("d", "JP", "given")]
    only = select_cohort(reviews, users, CohortConfig(users_per_country=5, country_source="inferred"), inferred).cohort
    assert only.select("user_id", "country").rows() == [("a", "BR"), ("b", "JP"), ("d", "US")]


def test_genre_coverage_counts_reviewed_books_and_lists_unmapped_paths():
    books = pl.DataFrame({"parent_asin": ["A", "B", "C"], "genre": ["romance", "unmapped", "unmapped"],
                          "categories": [["Books", "Romance"], ["Books", "Odd Shelf", "Deep"], []]})
    reviews = pl.DataFrame({"parent_asin": ["A", "A", "B", "B", "B", "C", "Z"]})
    cov = genre_coverage(reviews, books)
    assert cov["reviewed_books"] == 4 and cov["mapped_books"] == 1 and cov["mapped_share"] == 0.25
    assert cov["reviews_mapped_share"] == round(2 / 7, 4)
    assert cov["top_unmapped"][0] == {"path": "Odd Shelf > Deep", "reviews": 3}
    assert {r["path"] for r in cov["top_unmapped"]} == {"Odd Shelf > Deep", "(no categories)", "(no metadata)"}


TINY = """
version: tiny-v1
genres:
  - {id: fiction, name: Fiction, user_study: true, description: d, match: [["Literature & Fiction"]]}
  - {id: horror, name: Horror, user_study: false, description: d, match: [["Literature & Fiction", "Horror"], ["Horror"]]}
"""


@pytest.mark.parametrize("categories, genre", [
    (["Books", "Literature & Fiction", "Horror", "Gothic"], "horror"),  # longest prefix wins
    (["Books", "Literature & Fiction", "Classics"], "fiction"),
    (["Books", "Literature & Fiction"], "fiction"),
    (["Literature & Fiction", "Horror"], "horror"),  # no leading "Books"
    (["Books", "Horror"], "horror"),
    (["Books", "Cats", "Literature & Fiction"], "unmapped"),  # a prefix, not anywhere in the path
    (["Books"], "unmapped"),
    ([], "unmapped"),
    (None, "unmapped"),
])
def test_genre_longest_prefix(categories, genre):
    books = pl.DataFrame({"parent_asin": ["P1"], "categories": [categories]},
                         schema={"parent_asin": pl.String, "categories": pl.List(pl.String)})
    out = assign_genres(books, parse_genre_taxonomy(TINY))
    assert out.columns == ["parent_asin", "categories", "genre"] and out["genre"].to_list() == [genre]


@pytest.mark.parametrize("path, genre", [
    (["Science Fiction & Fantasy", "Science Fiction", "Space Opera"], "science_fiction"),
    (["Science Fiction & Fantasy", "Fantasy", "Epic"], "fantasy"),
    (["Science Fiction & Fantasy", "Gaming"], "fantasy"),
    (["Literature & Fiction", "Mystery & Suspense"], "mystery_thriller"),
    (["Literature & Fiction", "Literary"], "literary_fiction"),
    (["Health, Fitness & Dieting", "Mental Health"], "self_help"),
    (["Health, Fitness & Dieting", "Diets"], "health_fitness"),
])
def test_real_taxonomy_mapping(path, genre):
    books = pl.LazyFrame({"categories": [["Books", *path]]})
    assert assign_genres(books, load_genre_taxonomy()).collect()["genre"].item() == genre


def test_user_genre_shares():
    reviews = pl.DataFrame({"user_id": ["a", "a", "a", "a", "b"], "parent_asin": ["P1", "P1", "P2", "P9", "P2"]})
    books = pl.DataFrame({"parent_asin": ["P1", "P2"], "genre": ["romance", "history"]})
    shares = user_genre_shares(reviews.lazy(), books)
    assert shares.rows() == [("a", "romance", 2, 0.5), ("a", "history", 1, 0.25), ("a", "unmapped", 1, 0.25),
                             ("b", "history", 1, 1.0)]


# --- review-date window (backfills: users who reviewed in a period) ---

DAY_MS = 86_400_000
JAN_1_2023 = 1_672_531_200_000  # 2023-01-01T00:00:00Z in epoch ms, as Amazon Reviews 2023 timestamps


def dated_reviews(days: dict[str, list[int]]) -> pl.LazyFrame:
    """One review per day offset d from 2023-01-01; returns user_id, parent_asin, timestamp."""
    rows = [(user, f"P{i}", JAN_1_2023 + d * DAY_MS) for user, ds in days.items() for i, d in enumerate(ds)]
    return pl.LazyFrame(rows, schema={"user_id": pl.String, "parent_asin": pl.String, "timestamp": pl.Int64},
                        orient="row")


@pytest.mark.parametrize("since, until, expected", [
    ("2023-01-01", None, ["jan", "june"]),
    (None, "2022-12-31", ["jan", "old"]),               # jan also reviewed on 2022-12-02
    ("2023-01-01", "2023-01-31", ["jan"]),
    ("2023-06-10", "2023-06-10", ["june"]),             # a one-day window includes that whole day
    ("2024-01-01", None, []),
    (None, None, ["jan", "june", "old"]),
])
def test_review_window_keeps_users_who_reviewed_in_it(since, until, expected):
    reviews = dated_reviews({"old": [-400, -300], "jan": [-30, 5], "june": [160]})
    cfg = CohortConfig(min_reviews=1, reviews_since=since, reviews_until=until)
    assert select_cohort(reviews, None, cfg).cohort["user_id"].to_list() == expected


def test_review_window_end_day_is_inclusive_to_the_last_millisecond():
    reviews = pl.LazyFrame({"user_id": ["edge", "next"], "parent_asin": ["P1", "P2"],
                            "timestamp": [JAN_1_2023 + DAY_MS - 1, JAN_1_2023 + DAY_MS]})
    cfg = CohortConfig(min_reviews=1, reviews_until="2023-01-01")
    assert select_cohort(reviews, None, cfg).cohort["user_id"].to_list() == ["edge"]


def test_review_window_is_a_funnel_rule_after_min_reviews():
    """min_reviews counts all of a user's reviews; the window then keeps those active in it."""
    reviews = dated_reviews({"busy-old": [-400] * 3, "busy-new": [-400, -400, 10], "light-new": [10]})
    picked = select_cohort(reviews, None, CohortConfig(min_reviews=3, reviews_since="2023-01-01"))
    assert picked.cohort["user_id"].to_list() == ["busy-new"]
    assert picked.funnel.select("rule", "n_before", "n_dropped", "n_after").rows() == [
        ("reviewers", 3, 0, 3), ("min_reviews", 3, 1, 2), ("reviews_window", 2, 1, 1)]
    assert picked.cohort.columns == ["user_id", "country", "country_source", "n_reviews"]


def test_no_window_no_rule_and_no_timestamp_needed():
    picked = select_cohort(reviews_for({"a": 2}), None, CohortConfig(min_reviews=1))
    assert "reviews_window" not in picked.funnel["rule"].to_list()


@pytest.mark.parametrize("bad", [{"reviews_since": "2023-02-01", "reviews_until": "2023-01-01"},
                                 {"reviews_since": "yesterday"}, {"reviews_until": "2023-13-01"}])
def test_review_window_validates(bad):
    with pytest.raises(ValidationError):
        CohortConfig(**bad)


def test_backfill_cohort_filter_carries_the_window_into_the_recipe():
    from gravity_core.pipeline import CohortFilter
    spec = CohortFilter(user_ids=["u1"], reviews_since="2023-01-01", reviews_until="2023-06-30")
    assert spec.as_overrides() == ['cohort.user_ids=["u1"]', 'cohort.reviews_since="2023-01-01"',
                                   'cohort.reviews_until="2023-06-30"']
    schema = CohortFilter.model_json_schema()["properties"]
    assert all(field.get("description") for field in schema.values())  # the UI renders a form from these
    with pytest.raises(ValidationError):
        CohortFilter(reviews_since="2023-07-01", reviews_until="2023-06-30")
