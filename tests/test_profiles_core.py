"""Profile logic without models: age bins, interests, context fitting, batching, parsers."""
from __future__ import annotations

import pytest

from gravity_core.fences import fenced_regions
from gravity_core.profile import facets
from gravity_core.profile.config import ProfilesConfig
from gravity_core.profile.records import UserInput, UserReview, age_bin


def review(i, genre, text="x" * 50, ts=None):
    return UserReview(review_id=f"r{i}", parent_asin=f"B{i}", rating=5.0, text=text, timestamp=ts or i, genre=genre)


def user(genres):
    return UserInput(user_id="u", reviews=tuple(review(i, g) for i, g in enumerate(genres)))


@pytest.mark.parametrize("age,expected", [(18, "young"), (29, "young"), (30, "middle-aged"), (60, "middle-aged"),
                                          (61, "senior"), (90, "senior")])
def test_age_bins_follow_the_paper(age, expected):
    assert age_bin(age) == expected


def test_interests_take_genres_over_the_threshold_top_first():
    genres = ["a"] * 10 + ["b"] * 6 + ["c"] * 3 + ["d"] * 1 + ["unmapped"] * 5
    result = facets.interests(user(genres), ProfilesConfig(min_interests=1))
    assert result.genres == ["a", "b", "c"]  # d = 5% < 10%; unmapped never counts
    assert result.shares["a"] == 0.5


def test_interests_fill_up_to_the_minimum_and_cap_at_the_maximum():
    assert facets.interests(user(["a"] * 19 + ["b"]), ProfilesConfig(min_interests=2)).genres == ["a", "b"]
    many = [g for g in "abcdefg" for _ in range(3)]
    assert len(facets.interests(user(many), ProfilesConfig(max_interests=5)).genres) == 5


def test_fit_reviews_respects_the_budget_and_spans_genres():
    reviews = tuple(review(i, "a" if i < 20 else "b", text="word " * 40, ts=i) for i in range(24))
    cfg = ProfilesConfig(review_token_budget=200, review_chars_per_token=4.0, max_review_chars=100)
    text, ids = facets.fit_reviews(reviews, cfg)
    assert len(text) <= 800 and 2 <= len(ids) < 24
    assert {"r23", "r19"} <= set(ids)  # newest of each genre first
    regions = fenced_regions(text)
    assert [r.label for r in regions] == [f"REVIEW {i}" for i in range(1, len(ids) + 1)]
    assert all(r.text.endswith("...") for r in regions)  # each review cut to max_review_chars


def test_fit_reviews_keeps_everything_when_it_fits():
    reviews = tuple(review(i, "a", text="short") for i in range(5))
    assert len(facets.fit_reviews(reviews, ProfilesConfig())[1]) == 5


@pytest.mark.parametrize("n,k,calls", [(150, 25, 6), (150, 1, 150), (30, 25, 2), (7, 7, 1)])
def test_batches_give_ceil_n_over_k_calls(n, k, calls):
    assert len(facets.batches(list(range(n)), k)) == calls == facets.expected_calls(n, k)


def test_parse_stances_normalises_and_requires_every_id():
    text = 'Sure! ```json {"stances": {"a": "Support", "b": "no_support", "c": "NEUTRAL"}} ```'
    assert facets.parse_stances(text, ["a", "b", "c"]) == {"a": "support", "b": "no support", "c": "neutral"}
    with pytest.raises(ValueError, match="missing stances"):
        facets.parse_stances('{"stances": {"a": "support"}}', ["a", "b"])
    with pytest.raises(ValueError, match="allowed"):
        facets.parse_stances('{"stances": {"a": "maybe"}}', ["a"])
    with pytest.raises(ValueError, match="no JSON"):
        facets.parse_stances("I think they support it", ["a"])


def test_parse_levels_and_demographics():
    levels = '{"openness": "High", "conscientiousness": "low", "extraversion": "low", "agreeableness": "high", "neuroticism": "low"}'
    assert facets.parse_levels(levels)["openness"] == "high"
    with pytest.raises(ValueError, match="neuroticism"):
        facets.parse_levels('{"openness": "high"}'.replace("}", ', "conscientiousness": "low", "extraversion": "low", "agreeableness": "low"}'))
    assert facets.parse_demographics('{"age_bin": "Middle aged"}', ["age_bin"]) == {"age_bin": "middle-aged"}
    with pytest.raises(ValueError):
        facets.parse_demographics('{"gender": "robot"}', ["gender"])


def test_parse_summary_caps_sentences():
    assert facets.parse_summary("One. Two! Three? Four.", 2) == "One. Two!"
    with pytest.raises(ValueError):
        facets.parse_summary("   ", 6)


def test_stance_schema_lists_every_id_in_order():
    schema = facets.stance_schema(["x", "y"])
    assert list(schema["properties"]["stances"]["properties"]) == ["x", "y"]


def test_agreement_against_planted_truth():
    from gravity_core.profile.agreement import agreement
    from gravity_core.profile.records import Profile
    profile = Profile.model_validate({
        "user_id": "u", "user_summary": "s",
        "values": {"user_id": "u", "stances": {"a": "support", "b": "neutral", "d": "support"}, "summary": "v",
                   "review_ids": [], "calls": 1},
        "personality": {"user_id": "u", "levels": {"openness": "high", "neuroticism": "low"}, "source": "llm"},
        "interests": {"user_id": "u", "genres": ["x", "y", "z"], "shares": {}},
        "demographics": {"user_id": "u", "country": None, "age": None, "age_bin": "senior", "gender": "female",
                         "sources": {"age": "inferred:llm", "gender": "given"}},
        "provenance": {"models": {}, "prompts": {}, "review_ids": [], "banks": {}}})
    truth = {"u": {"age": 70, "gender": "female", "top_genres": ["x", "q"], "stances": {"a": "support", "b": "no support", "c": "support"},
                   "ocean": {"openness": "high", "neuroticism": "high"}}}
    result = agreement([profile], truth)
    assert result["stances"] == {"agreement": 0.5, "n": 2, "chance": 0.333, "always_majority_label": 0.5}
    assert result["ocean"]["agreement"] == 0.5 and result["top_genres_recall"]["mean"] == 0.5
    assert result["inferred_age_bin"] == {"agreement": 1.0, "n": 1, "chance": 0.333}
    assert result["inferred_gender"]["n"] == 0  # given attributes are not scored
