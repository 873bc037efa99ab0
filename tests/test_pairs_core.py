"""Preference-pair assembly on small frames: labels, exclusions, ablations, splits, TRL shape."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from gravity_core.pairs import assemble
from gravity_core.pairs.build import assign_splits, build_pairs, counts, profile_prefixes
from gravity_core.pairs.genres import distinct_frame, least_similar
from gravity_core.pairs.scenarios import parse_scenarios, pool_frame
from gravity_core.stage_configs import PairsConfig
from tasks.resources import load_phrasing, load_prompt

PHRASING = load_phrasing()

STANCES = pl.LazyFrame({"user_id": ["u1", "u1", "u1"], "seed_id": ["s1", "s2", "s3"],
                        "stance": ["support", "no support", "neutral"]})
POOL = pl.LazyFrame({"scenario_id": ["s1#0", "s2#0", "s3#0"], "seed_id": ["s1", "s2", "s3"],
                     "aligned": ["A1", "A2", "A3"], "contradicting": ["C1", "C2", "C3"]})
SEEDS = pl.LazyFrame({"seed_id": ["s1", "s2", "s3"], "statement": ["x", "y", "z"]})
ITEMS = pl.LazyFrame({"item_id": ["O1", "N1"], "trait": ["openness", "neuroticism"], "style": ["scenario", "dialogue"],
                      "situation": ["sit", "A friend says: hi"], "high_response": ["H", "HN"], "low_response": ["L", "LN"]})
LEVELS = pl.LazyFrame({"user_id": ["u1", "u1"], "trait": ["openness", "neuroticism"], "level": ["high", "low"]})
GENRES = pl.LazyFrame({"genre": ["a", "b", "c"], "name": ["Alpha", "Beta", "Gamma"], "description": ["da", "db", "dc"]})
BOOKS = pl.LazyFrame({"parent_asin": ["b1", "b2", "b3", "b4", "b5"], "title": ["T1", "T2", "T3", "T4", "T5"],
                      "description": ["D1", "D2", "D3", "D4", "D5"], "genre": ["a", "a", "a", "c", "c"],
                      "average_rating": [4.8, 4.5, 3.0, 4.9, 4.1]})
INTERESTS = pl.LazyFrame({"user_id": ["u1", "u1"], "genre": ["a", "b"], "rank": [0, 1]})
DISTINCT = pl.LazyFrame({"user_id": ["u1"], "distinct_genre": ["c"]})
REVIEWED = pl.LazyFrame({"user_id": ["u1"], "parent_asin": ["b1"]})


def test_value_pairs_follow_the_stance_and_omit_neutral():
    pairs = assemble.value_pairs(STANCES, POOL, SEEDS, PHRASING).collect().sort("source_id")
    assert pairs.select("source_id", "chosen", "rejected").rows() == [("s1#0", "A1", "C1"), ("s2#0", "C2", "A2")]
    assert set(pairs["facet"]) == {"value"} and pairs["heldout_key"].to_list() == ["s1#0", "s2#0"]


def test_personality_pairs_choose_the_matching_level():
    pairs = assemble.personality_pairs(LEVELS, ITEMS, PHRASING).collect().sort("source_id")
    assert pairs.select("source_id", "chosen", "rejected").rows() == [("N1", "LN", "HN"), ("O1", "H", "L")]
    assert pairs.filter(pl.col("source_id") == "N1")["task"][0].endswith("Reply to them in your own words.")


def test_category_pairs_contrast_interests_with_distinct_genres():
    pairs = assemble.category_pairs(INTERESTS, DISTINCT, GENRES, PHRASING).collect().sort("source_id")
    assert pairs["source_id"].to_list() == ["a>c", "b>c"]
    assert pairs["chosen"][0] == "A Alpha book: da" and pairs["rejected"][0] == "A Gamma book: dc"


def test_summary_pairs_use_highly_rated_unreviewed_books():
    pairs = assemble.summary_pairs(INTERESTS, DISTINCT, BOOKS, REVIEWED, per_genre=5, min_rating=4.0, phrasing=PHRASING).collect()
    assert pairs["source_id"].to_list() == ["b2>b4"]  # b1 reviewed, b3 rated 3.0
    assert pairs["chosen"][0] == "T2: D2" and pairs["rejected"][0] == "T4: D4"


def test_least_similar_with_faiss():
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype=np.float32)
    assert least_similar(vectors, ["a", "b", "c"], 1) == {"a": ["c"], "b": ["c"], "c": ["a"]}
    interests = pl.DataFrame({"user_id": ["u", "u"], "genre": ["a", "d"], "rank": [0, 1]})
    frame = distinct_frame(interests, {"a": ["d", "c", "b", "e"]}, 2)
    assert frame["distinct_genre"].to_list() == ["c", "b"]  # own interest d skipped, then k=2


def _inputs():
    return {"interests": INTERESTS, "distinct": DISTINCT, "genres": GENRES, "books": BOOKS, "reviewed": REVIEWED,
            "stances": STANCES, "pool": POOL, "seeds": SEEDS, "levels": LEVELS, "items": ITEMS}


def _prefixes():
    profile = {"user_id": "u1", "profile_version": "pv1", "demographics": "country: USA",
               "value_summary": "Values family.", "traits": "high openness"}
    return profile_prefixes([profile], load_prompt("gravity_training"))


def test_build_pairs_conditions_on_the_profile_in_trl_format():
    pairs = build_pairs(PairsConfig(heldout_fraction=0, eval_fraction=0), _inputs(), _prefixes(), "pool-1", 0, PHRASING, "pv")
    assert pairs.height == 2 + 1 + 2 + 2
    row = pairs.filter(pl.col("source_id") == "s1#0").row(0, named=True)
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    assert "Values family." in row["prompt"][1]["content"] and row["prompt"][1]["content"].rstrip().endswith('"x"')
    assert row["chosen_msgs"] == [{"role": "assistant", "content": row["chosen"]}]
    assert (row["profile_version"], row["pool_version"]) == ("pv1", "pool-1")
    assert counts(pairs)["per_user"]["u1"]["value"] == 2


@pytest.mark.parametrize("cfg,missing", [
    ({"drop_facets": ["value"]}, {"value"}),
    ({"drop_facets": ["interest-category", "interest-summary"]}, {"interest-category", "interest-summary"}),
    ({"drop_traits": ["openness", "neuroticism"]}, {"personality"}),
])
def test_ablation_switches(cfg, missing):
    pairs = build_pairs(PairsConfig(**cfg), _inputs(), _prefixes(), "p", 0, PHRASING, "pv")
    assert not missing & set(pairs["facet"]) and set(pairs["facet"])


def test_single_trait_ablation_keeps_the_other_traits():
    pairs = build_pairs(PairsConfig(drop_traits=["openness"]), _inputs(), _prefixes(), "p", 0, PHRASING, "pv")
    assert pairs.filter(pl.col("facet") == "personality")["source_id"].to_list() == ["N1"]


def test_heldout_split_takes_whole_scenarios_across_users():
    n = 400
    frame = pl.LazyFrame({"pair_id": [f"u{i % 20}|value|s{i // 20}" for i in range(n)],
                          "heldout_key": [f"s{i // 20}" for i in range(n)]})
    split = assign_splits(frame, PairsConfig(heldout_fraction=0.3, eval_fraction=0.2), 0).collect()
    per_key = split.group_by("heldout_key").agg((pl.col("split") == "heldout").all().alias("all"),
                                                (pl.col("split") == "heldout").any().alias("any"))
    assert (per_key["all"] == per_key["any"]).all() and per_key["all"].any()
    assert {"train", "eval", "heldout"} == set(split["split"])


def test_scenario_parser_rejects_bad_pairs():
    good = '{"pairs": [{"aligned": "I help.", "contradicting": "I refuse."}]}'
    assert parse_scenarios(good, 1) == [{"aligned": "I help.", "contradicting": "I refuse."}]
    with pytest.raises(ValueError, match="exactly 2"):
        parse_scenarios(good, 2)
    with pytest.raises(ValueError, match="same text"):
        parse_scenarios('{"pairs": [{"aligned": "Same!", "contradicting": "same"}]}', 1)
    with pytest.raises(ValueError, match="non-empty"):
        parse_scenarios('{"pairs": [{"aligned": "", "contradicting": "x"}]}', 1)
    with pytest.raises(ValueError, match="repeats"):
        parse_scenarios('{"pairs": [{"aligned": "a", "contradicting": "b"}, {"aligned": "a", "contradicting": "c"}]}', 2)


def test_pool_drops_pairs_repeated_across_seeds():
    pool = pool_frame({"s1": [{"aligned": "a", "contradicting": "b"}], "s2": [{"aligned": "A", "contradicting": "B."}]},
                      "v", "m", "1")
    assert pool["scenario_id"].to_list() == ["s1#0"]


def test_usersft_examples_pair_descriptions_with_the_users_own_reviews():
    from gravity_core.training.usersft import usersft_messages
    from tasks.resources import load_prompt
    reviews = pl.LazyFrame({"user_id": ["u1", "u2"], "parent_asin": ["b1", "b2"], "text": ["Loved it.", "Meh."]})
    persona = {"age": "senior", "gender": "female", "country": "Japan"}
    rows = usersft_messages(reviews, BOOKS, {"u1": persona}, load_prompt("baseline_user_sft_training"))
    assert rows["user_id"].to_list() == ["u1"]
    [messages] = rows["messages"].to_list()
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    user = messages[1]["content"]
    assert user.startswith("You are a senior female from Japan. You recently read the book:")
    assert "<<<BOOK TITLE>>>\nT1\n<<<END BOOK TITLE>>>" in user and "<<<BOOK DESCRIPTION>>>\nD1\n" in user
    assert user.endswith("and this was your review:")
    assert messages[2] == {"role": "assistant", "content": "Loved it."}


def test_prefalign_books_are_the_reviewed_ones_topped_up_from_top_genres():
    from gravity_core.evaluation.trained import prefalign_books
    catalogue = BOOKS.collect().drop("average_rating")
    reviewed = pl.DataFrame({"user_id": ["u1", "u2", "u2"], "parent_asin": ["b1", "b4", "b5"]})
    interests = pl.DataFrame({"user_id": ["u1", "u2"], "genre": ["a", "c"]})
    books = prefalign_books(reviewed, catalogue, interests, minimum=3, maximum=None, seed=0)
    u1 = books.filter(pl.col("user_id") == "u1")
    assert u1.filter(pl.col("source") == "reviewed")["parent_asin"].to_list() == ["b1"]
    assert sorted(u1.filter(pl.col("source") == "top_genre")["parent_asin"]) == ["b2", "b3"]  # genre a, unreviewed
    u2 = books.filter(pl.col("user_id") == "u2")
    assert u2["source"].to_list() == ["reviewed", "reviewed"]  # no unreviewed book of genre c is left
    capped = prefalign_books(reviewed, catalogue, interests, minimum=3, maximum=2, seed=0)
    assert capped.group_by("user_id").len().sort("user_id")["len"].to_list() == [2, 2]
    assert "b1" in capped.filter(pl.col("user_id") == "u1")["parent_asin"].to_list()  # reviewed books first


def test_trained_baselines_take_the_papers_settings_then_the_recipes_overrides():
    from gravity_core.evaluation.trained import train_configs
    train = {"base_model": "m", "learning_rate": 5e-5, "max_steps": 8, "beta": 0.3}
    configs = train_configs(train, ["user_sft", "prefalign"], {"prefalign": {"max_steps": 2}})
    assert configs["gravity"] == train
    assert configs["user_sft"] == {**train, "method": "sft", "learning_rate": 2e-4, "num_train_epochs": 5}
    assert configs["prefalign"]["learning_rate"] == 2e-5 and configs["prefalign"]["max_steps"] == 2
    assert "gravity_sft" not in configs
    assert set(train_configs(train, [], {"gravity_sft": {"max_steps": 1}})) == {"gravity"}  # unused, not an error
    with pytest.raises(ValueError, match="usersft"):
        train_configs(train, ["user_sft"], {"usersft": {"max_steps": 1}})  # a typo is


def test_prefalign_rows_are_conversational_dpo_examples():
    from gravity_core.training.usersft import prefalign_rows
    from tasks.resources import load_prompt
    rows = prefalign_rows([{"user_id": "u1", "parent_asin": "b1", "aligned": "Vivid.", "misaligned": "Dull."}],
                          {"u1": {"age": "young", "gender": "male", "country": "Brazil"}},
                          load_prompt("baseline_prefalign_training"))
    row = rows.row(0, named=True)
    assert row["prompt"][1]["content"] == ("You are a young male from Brazil. Which book description is more "
                                           "engaging and interesting?")
    assert row["chosen"] == [{"role": "assistant", "content": "Vivid."}]
    assert row["rejected"] == [{"role": "assistant", "content": "Dull."}]


def test_generation_targets_are_unreviewed_top_genre_books():
    from gravity_core.generate import select_targets
    targets = select_targets(BOOKS, INTERESTS, REVIEWED, k=5, min_rating=4.0)
    assert targets["parent_asin"].to_list() == ["b2"]  # b1 reviewed, b3 low rated, b4/b5 not an interest


def test_phrasing_placeholders_are_checked():
    from gravity_core.phrasing import Phrasing
    with pytest.raises(ValueError, match="value_task needs 1"):
        Phrasing.model_validate({**PHRASING.model_dump(), "value_task": "no placeholder"})


def test_stance_probe_goes_after_the_values_line():
    from gravity_core.training.evaluate import with_stance
    text = "Reader profile\nValues: Kind.\nPersonality: calm\n\nTask"
    assert "Values: Kind. On \"X\", this reader does not support it.\n" in with_stance(text, "X", False, PHRASING.stance_probe)
