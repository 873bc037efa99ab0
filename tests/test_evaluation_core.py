"""The pure evaluation core (issue 10): judge prompts and parsing, orderings, metrics,
bootstrap, tests of significance, judge reliability, the paper's published numbers."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError
from scipy import optimize, stats

from gravity_core.banks import parse_genre_taxonomy
from gravity_core.evaluation import (
    JudgeThresholds, ablation_deltas, assign_paper_genres, bootstrap_intervals, bradley_terry, candidate_ids,
    check_covers, check_position_balance, compare_to_reference, degrade_description, first_position_rate,
    holm_adjust, ids_to_methods, judge_flags, judge_reliability, latin_square_orderings, method_metrics,
    metric_frame, metrics_by_group, ordering_consistency, paired_wilcoxon, pairwise_outcomes,
    parse_paper_genre_groups, parse_paper_results, parse_ranking, parse_score, per_user_metric,
    position_balance_problems, ranking_schema, sanity_accuracy, score_schema, win_matrix,
)
from gravity_core.guided import check_supported
from tasks.resources import load_prompt

DATA = Path(__file__).resolve().parents[1] / "gravity_core" / "data"
KEYS = ["user_id", "parent_asin", "ordering", "judge_model"]

# ---------------------------------------------------------------- prompts (paper Table 12, D.3)

TABLE12 = {  # template: (Table 12 method, inputs, a phrase of the paper's wording)
    "baseline_base_rewrite": ("BaseRewrite", {"book", "description"},
                              "Please generate a more engaging and interesting description for this book:"),
    "baseline_demo_based": ("DemoBased", {"age", "gender", "country", "book", "description"}, "You are a "),
    "baseline_user_summary": ("UserSummary", {"user_summary", "book", "description"}, "Based on this user summary:"),
    "baseline_lamp": ("LaMP", {"reviews", "book", "description"}, "Based on these user reviews:"),
    "baseline_triagent_rewrite": ("TriAgent", {"book", "description"}, "with this description:"),
    "baseline_triagent_edit": ("TriAgent", {"user_summary", "personalized_description"},
                               "please generate a set of suggested edits to make the description more engaging"),
    "baseline_triagent_final": ("TriAgent", {"user_summary", "suggested_edits", "book", "personalized_description"},
                                "and these suggested edits, please generate a more engaging"),
    "baseline_prefalign_pairs": ("PrefAlign", {"age", "gender", "country", "book", "description", "aligned"},
                                 "description for this book:"),
    "baseline_prefalign_training": ("PrefAlign", {"age", "gender", "country"},
                                    "Which book description is more engaging and interesting?"),
    "baseline_user_sft_training": ("UserSFT", {"age", "gender", "country", "book", "description"},
                                   "You recently read the book:"),
}
SIX_TO_EIGHT = {"baseline_base_rewrite", "baseline_demo_based", "baseline_user_summary", "baseline_lamp",
                "baseline_triagent_rewrite", "baseline_triagent_final", "baseline_prefalign_pairs"}


# Version 2 of these templates takes stranger-written text fenced (gravity_core.fences).
FENCED = {"baseline_base_rewrite", "baseline_demo_based", "baseline_user_summary", "baseline_lamp",
          "baseline_triagent_rewrite", "baseline_triagent_edit", "baseline_triagent_final",
          "baseline_prefalign_pairs", "baseline_user_sft_training"}


def _sentinels(inputs: set[str]) -> dict:
    values = {name: f"<<{name.upper()}>>" for name in inputs}
    if "reviews" in inputs:
        values["reviews"] = [f"<<REVIEW{i}>>" for i in range(1, 6)]
    if "aligned" in inputs:
        values["aligned"] = True
    return values


@pytest.mark.parametrize("name", sorted(TABLE12))
def test_baseline_prompt_carries_exactly_table12_fields(name):
    method, inputs, phrase = TABLE12[name]
    template = load_prompt(name)
    assert set(template.inputs) == inputs and len(template.inputs) == len(inputs)
    assert template.version == ("2" if name in FENCED else "1") and f"follows paper Table 12 ({method})" in " ".join(template.description.split())
    values = _sentinels(inputs)
    user = template.render(**values)[1].content
    for name_, value in values.items():
        for text in (value if isinstance(value, list) else [value]):
            if isinstance(text, str):
                assert text in user, f"{name_} missing from the rendered prompt"
    assert phrase in user
    assert ("Write 6-8 sentences." in user) == (name in SIX_TO_EIGHT)


def test_demographic_baselines_use_the_papers_persona_sentence():
    for name in ("baseline_demo_based", "baseline_prefalign_pairs", "baseline_user_sft_training"):
        user = load_prompt(name).render(**{**_sentinels(TABLE12[name][1]), "age": "young", "gender": "female",
                                           "country": "India"})[1].content
        assert user.startswith("You are a young female from India. ")


def test_prefalign_pairs_switch_between_aligned_and_misaligned():
    template = load_prompt("baseline_prefalign_pairs")
    values = _sentinels(TABLE12["baseline_prefalign_pairs"][1])
    aligned = template.render(**values)[1].content
    misaligned = template.render(**{**values, "aligned": False})[1].content
    assert "a more engaging and interesting description" in aligned and "less" not in aligned
    assert "a less engaging or interesting description" in misaligned


def test_judge_ranking_shows_ids_not_methods():
    template = load_prompt("judge_ranking")
    assert set(template.inputs) == {"age", "gender", "country", "user_summary", "descriptions"}
    shown = [{"id": i, "text": f"text of {i}"} for i in candidate_ids(8)]
    user = template.render(age="senior", gender="male", country="Japan", user_summary="Likes poetry.",
                           descriptions=shown)[1].content
    assert user.startswith("You are a senior male from Japan.\nLikes poetry.\nPlease carefully read each")
    assert all(d["text"] in user for d in shown)
    assert "(A, B, C, D, E, F, G, H)" in user and '{"ranking"' in user


def test_judge_interestingness_uses_the_papers_scale():
    template = load_prompt("judge_interestingness")
    assert set(template.inputs) == {"age", "gender", "country", "user_summary", "description"}
    user = template.render(**template.example)[1].content
    assert "rate how engaging and interesting you find the description from 1 to 5" in user
    assert "1 = not very interesting/engaging, 5 = very interesting/engaging" in user


# ---------------------------------------------------------------- orderings

@pytest.mark.parametrize("n", [2, 3, 4, 5, 8, 9])
@pytest.mark.parametrize("seed", [0, 7])
def test_full_latin_square_is_position_balanced(n, seed):
    methods = [f"m{i}" for i in range(n)]
    rows = latin_square_orderings(methods, None, seed)
    assert len(rows) == n and all(sorted(r) == sorted(methods) for r in rows)
    for position in range(n):
        assert sorted(r[position] for r in rows) == sorted(methods)
    verdicts = pl.DataFrame({"candidates": rows})
    assert position_balance_problems(verdicts) == []


@pytest.mark.parametrize("n,k", [(8, 2), (8, 3), (9, 4), (5, 1)])
def test_fewer_orderings_spread_each_method_over_distinct_positions(n, k):
    methods = [f"m{i}" for i in range(n)]
    rows = latin_square_orderings(methods, k, seed=3)
    assert len(rows) == k and len({tuple(r) for r in rows}) == k
    for m in methods:
        positions = sorted(r.index(m) for r in rows)
        assert len(set(positions)) == k
        gaps = np.diff(positions + [positions[0] + n])
        assert gaps.max() - gaps.min() <= 1  # evenly spaced around the square
    assert rows == latin_square_orderings(methods, k, seed=3)


def test_orderings_reject_bad_sizes():
    with pytest.raises(ValueError):
        latin_square_orderings(["a", "b"], 3, 0)
    with pytest.raises(ValueError):
        latin_square_orderings(["a", "a"], None, 0)


def test_broken_position_balance_is_detected():
    rows = latin_square_orderings(["original", "lamp", "gravity"], None, 0)
    rows[1] = ["gravity", *[m for m in rows[1] if m != "gravity"]]
    rows[2] = ["gravity", *[m for m in rows[2] if m != "gravity"]]
    verdicts = pl.DataFrame({"candidates": rows})
    problems = position_balance_problems(verdicts)
    assert any("method=gravity" in p and "most often at position 0" in p for p in problems)
    with pytest.raises(ValueError, match="position balance is broken"):
        check_position_balance(verdicts)


# ---------------------------------------------------------------- parsing

def test_parse_ranking_accepts_permutations():
    ids = candidate_ids(4)
    assert parse_ranking('{"ranking": ["C", "A", "D", "B"]}', ids) == ["C", "A", "D", "B"]
    assert parse_ranking('```json\n{"ranking": ["A","B","C","D"]}\n```', ids) == ids
    assert parse_ranking('{"ranking": ["2", "1"]}', candidate_ids(2, "numbers")) == ["2", "1"]


@pytest.mark.parametrize("reply,match", [
    ('{"ranking": ["A", "A", "B", "C"]}', "more than once"),
    ('{"ranking": ["A", "B", "C"]}', "missing ids: \\['D'\\]"),
    ('{"ranking": ["A", "B", "C", "D", "E"]}', "unknown ids: \\['E'\\]"),
    ('{"ranking": ["A", "B", "C", "gravity"]}', "unknown ids"),
    ("I liked C best, then A, D and B.", "not JSON"),
    ('["C", "A", "D", "B"]', "single key"),
    ('{"ranking": ["C", "A", "D", "B"], "why": "x"}', "single key"),
    ('{"ranking": [3, 1, 4, 2]}', "list of id strings"),
    ('Ranking: {"ranking": ["C", "A", "D", "B"]}', "not JSON"),
])
def test_parse_ranking_rejects_with_a_reask_message(reply, match):
    with pytest.raises(ValueError, match=match) as err:
        parse_ranking(reply, candidate_ids(4))
    assert "ranking" in str(err.value)


def test_parse_score_is_strict():
    assert parse_score('{"score": 4}') == 4 and parse_score(" 5 ") == 5 and parse_score('{"score": 1}') == 1
    for bad in ('{"score": 0}', '{"score": 6}', '{"score": 4.5}', '{"score": "4"}', '{"score": true}',
                "four", "Score: 4", "4/5", '{"rating": 4}'):
        with pytest.raises(ValueError):
            parse_score(bad)


def test_schemas_are_walkable_by_guided_decoding_and_match_the_parsers():
    ids = candidate_ids(8)
    check_supported(ranking_schema(ids))
    check_supported(score_schema())
    items = ranking_schema(ids)["properties"]["ranking"]
    assert items["minItems"] == items["maxItems"] == 8 and items["items"]["enum"] == ids
    assert parse_ranking(json.dumps({"ranking": ids[::-1]}), ids) == ids[::-1]
    assert score_schema()["properties"]["score"]["enum"] == [1, 2, 3, 4, 5]


def test_ids_translate_back_to_methods():
    assert ids_to_methods(["B", "C", "A"], ["A", "B", "C"], ["original", "lamp", "gravity"]) == \
        ["lamp", "gravity", "original"]


# ---------------------------------------------------------------- metrics

def _verdicts(rankings: list[tuple[str, str, int, list[str]]], candidates: list[str] | None = None) -> pl.DataFrame:
    rows = [{"user_id": u, "parent_asin": b, "ordering": o, "judge_model": "judge",
             "candidates": candidates or sorted(r), "ranking": r} for u, b, o, r in rankings]
    return pl.DataFrame(rows)


HAND = _verdicts([("u1", "b1", 0, ["gravity", "a", "original"]), ("u1", "b1", 1, ["a", "gravity", "original"]),
                  ("u2", "b2", 0, ["gravity", "original", "a"]), ("u2", "b2", 1, ["original", "gravity", "a"])])
SCORES = pl.DataFrame({"user_id": ["u1", "u1", "u2", "u2", "u1"], "parent_asin": ["b1"] * 2 + ["b2"] * 2 + ["b1"],
                       "method": ["gravity", "a", "gravity", "a", "original"], "score": [5, 3, 4, 2, 3]})
SIMILARITY = pl.DataFrame({"user_id": ["u1", "u1", "u2", "u2"], "parent_asin": ["b1", "b1", "b2", "b2"],
                           "method": ["gravity", "a", "gravity", "a"], "similarity": [0.7, 0.9, 0.5, 0.8]})


def test_metrics_equal_hand_computed_values():
    table = {r["method"]: r for r in method_metrics(HAND, SCORES, SIMILARITY).iter_rows(named=True)}
    assert {m: table[m]["top1_win_rate"] for m in table} == {"gravity": 0.5, "a": 0.25, "original": 0.25}
    assert table["gravity"]["preference_gain"] == 0.75 and table["a"]["preference_gain"] == 0.5
    assert table["original"]["preference_gain"] is None
    assert table["gravity"]["interestingness"] == 4.5 and table["a"]["interestingness"] == 2.5
    assert table["gravity"]["similarity"] == pytest.approx(0.6) and table["original"]["similarity"] is None


def test_pairwise_outcomes_and_bradley_terry_with_a_tied_pair():
    pairs = pairwise_outcomes(HAND)
    assert pairs.height == 4 * 3
    methods = ["a", "gravity", "original"]
    wins = win_matrix(pairs, methods)
    assert wins.tolist() == [[0, 1, 2], [3, 0, 3], [2, 1, 0]]  # a vs original is tied 2-2
    p = bradley_terry(wins, prior=0)
    # by symmetry p_a = p_original = x, and gravity wins 6 of 8: y / (x + y) = 3/4, geometric mean 1
    assert p == pytest.approx([3 ** (-1 / 3), 3 ** (2 / 3), 3 ** (-1 / 3)], rel=1e-6)
    assert np.prod(p) == pytest.approx(1.0)


def test_bradley_terry_matches_the_likelihood_maximum():
    wins = np.array([[0, 7, 4, 9], [3, 0, 5, 6], [6, 5, 0, 2], [1, 4, 8, 0]], dtype=float)

    def nll(theta):
        diff = theta[:, None] - theta[None, :]
        return -np.sum(wins * (diff - np.logaddexp(0, diff)))

    theta = optimize.minimize(nll, np.zeros(4), method="BFGS").x
    expected = np.exp(theta - theta.mean())
    assert bradley_terry(wins, prior=0) == pytest.approx(expected, rel=1e-4)
    assert bradley_terry(np.array([[0, 1], [1, 0.0]]), prior=0) == pytest.approx([1, 1])
    assert bradley_terry(np.array([[0, 3], [1, 0.0]]), prior=0) == pytest.approx([3 ** 0.5, 3 ** -0.5])


def test_bradley_terry_rejects_disconnected_comparisons():
    wins = np.zeros((4, 4))
    wins[0, 1] = wins[2, 3] = 1
    with pytest.raises(ValueError, match="not connected"):
        bradley_terry(wins)


def test_a_method_that_always_wins():
    rng = np.random.default_rng(1)
    rows = []
    for u in range(30):
        for o, order in enumerate(latin_square_orderings(["original", "a", "b", "gravity"], None, u)):
            rest = [m for m in order if m != "gravity"]
            rows.append((f"u{u}", "b1", o, ["gravity", *rng.permutation(rest).tolist()]))
    verdicts = _verdicts(rows)
    table = {r["method"]: r for r in method_metrics(verdicts, SCORES.head(0), SIMILARITY.head(0)).iter_rows(named=True)}
    assert table["gravity"]["top1_win_rate"] == 1.0 and table["gravity"]["preference_gain"] == 1.0
    others = [table[m]["bt_strength"] for m in ("original", "a", "b")]
    assert table["gravity"]["bt_strength"] > 20 * max(others)
    ci = bootstrap_intervals(verdicts, SCORES.head(0), SIMILARITY.head(0), n_boot=100, seed=0)
    row = ci.filter(method="gravity", metric="top1_win_rate").row(0, named=True)
    assert (row["estimate"], row["ci_low"], row["ci_high"]) == (1.0, 1.0, 1.0)


def test_bradley_terry_recovers_plackett_luce_strengths():
    methods = ["original", "lamp", "prefalign", "gravity"]
    log_strength = np.array([-1.0, 0.0, 0.4, 0.6])
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"b{b}", 0, [methods[i] for i in np.argsort(-(log_strength + rng.gumbel(size=4)))])
            for u in range(300) for b in range(4)]
    table = method_metrics(_verdicts(rows), SCORES.head(0), SIMILARITY.head(0))
    got = dict(zip(table["method"], table["bt_strength"]))
    expected = np.exp(log_strength - log_strength.mean())
    assert [got[m] for m in methods] == pytest.approx(expected, rel=0.1)


def _simulated(seed: int, n_users: int = 200, per_user: int = 4, p: float = 0.7,
               user_effect: bool = False) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    user_wins = rng.random(n_users) < p
    rows = []
    for u in range(n_users):
        for b in range(per_user):
            won = user_wins[u] if user_effect else rng.random() < p
            rows.append((f"u{u}", f"b{b}", 0, ["gravity", "original"] if won else ["original", "gravity"]))
    return _verdicts(rows, candidates=["original", "gravity"])


def test_bootstrap_intervals_cover_the_known_win_probability():
    covered = 0
    for seed in range(20):
        ci = bootstrap_intervals(_simulated(seed), SCORES.head(0), SIMILARITY.head(0), n_boot=300, seed=seed,
                                 bradley_terry_ci=False)
        row = ci.filter(method="gravity", metric="top1_win_rate").row(0, named=True)
        covered += row["ci_low"] <= 0.7 <= row["ci_high"]
        assert row["ci_high"] - row["ci_low"] < 0.15
    assert covered >= 17  # nominal 95%; 17 of 20 allows for chance


def test_bootstrap_resamples_users_not_verdicts():
    # every user repeats one verdict 10 times: the information is 50 users, not 500 verdicts
    verdicts = _simulated(0, n_users=50, per_user=10, p=0.5, user_effect=True)
    row = bootstrap_intervals(verdicts, SCORES.head(0), SIMILARITY.head(0), n_boot=500, seed=0) \
        .filter(method="gravity", metric="preference_gain").row(0, named=True)
    assert row["ci_high"] - row["ci_low"] > 0.2  # ~ 3.92 * sqrt(.25 / 50); per verdict it would be ~0.09


def test_bootstrap_is_seeded():
    a = bootstrap_intervals(HAND, SCORES, SIMILARITY, n_boot=50, seed=4)
    assert a.equals(bootstrap_intervals(HAND, SCORES, SIMILARITY, n_boot=50, seed=4))
    assert set(a.filter(method="gravity")["metric"]) == {"top1_win_rate", "preference_gain", "interestingness",
                                                        "similarity", "bt_strength"}


def test_invalid_rankings_are_rejected():
    bad = HAND.with_columns(pl.when(pl.col("ordering") == 0).then(pl.lit(["gravity", "a", "a"]))
                            .otherwise(pl.col("ranking")).alias("ranking"))
    with pytest.raises(ValueError, match="not a permutation"):
        method_metrics(bad, SCORES, SIMILARITY)


# ---------------------------------------------------------------- breakdowns

def test_metrics_per_country_and_unmapped_users_are_kept():
    users = pl.DataFrame({"user_id": ["u1"], "country": ["Japan"]})
    table = metrics_by_group(HAND, SCORES, SIMILARITY, users, "user_id", "country")
    japan = table.filter(country="Japan", method="gravity").row(0, named=True)
    assert japan["top1_win_rate"] == 0.5 and japan["preference_gain"] == 1.0 and japan["interestingness"] == 5.0
    rest = table.filter(country="unmapped", method="gravity").row(0, named=True)
    assert rest["top1_win_rate"] == 0.5 and rest["preference_gain"] == 0.5


def test_paper_genre_groups_cover_the_taxonomy():
    groups = parse_paper_genre_groups((DATA / "paper_genre_groups.yaml").read_text())
    taxonomy = parse_genre_taxonomy((DATA / "banks" / "genres.yaml").read_text())
    check_covers(groups, [g.id for g in taxonomy.genres])
    with pytest.raises(ValueError, match="unmapped genres \\['poetry'\\]"):
        check_covers(groups, [g.id for g in taxonomy.genres] + ["poetry"])
    books = pl.DataFrame({"parent_asin": ["b1", "b2", "b3"], "genre": ["romance", "history", "unmapped"]})
    got = assign_paper_genres(books, groups).sort("parent_asin")
    assert got["fiction_group"].to_list() == ["fiction", "nonfiction", "unmapped"]
    assert got["paper_category"].to_list() == ["romance", "history_politics", "unmapped"]


def test_genre_groups_reject_unknown_categories():
    text = "version: x\ncategories: [{id: romance, name: R, group: fiction}]\ngenres: {romance: poetry}\n"
    with pytest.raises(ValidationError, match="unknown categories"):
        parse_paper_genre_groups(text)


# ---------------------------------------------------------------- statistics

def test_holm_equals_hand_computed_values():
    # sorted: .005*4=.02, .01*3=.03, .03*2=.06, .04*1=.04 -> running max .06
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([0.5, 0.4]) == pytest.approx([0.8, 0.8])
    adjusted = holm_adjust([0.02, float("nan"), 0.01])
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)
    assert holm_adjust([0.9, 0.8]) == [1.0, 1.0]


def test_wilcoxon_wrapper_returns_scipys_result():
    rng = np.random.default_rng(2)
    x, y = rng.random(30), rng.random(30)
    expected = stats.wilcoxon(x, y)
    assert paired_wilcoxon(x, y) == (pytest.approx(expected.statistic), pytest.approx(expected.pvalue))
    greater = stats.wilcoxon(x, y, alternative="greater")
    assert paired_wilcoxon(x, y, "greater")[1] == pytest.approx(greater.pvalue)
    assert paired_wilcoxon([0.5, 0.5], [0.5, 0.5]) == (0.0, 1.0)


def _per_user(values: dict[str, list[float]]) -> pl.DataFrame:
    return pl.DataFrame([{"user_id": f"u{i}", "method": m, "value": v}
                         for m, vs in values.items() for i, v in enumerate(vs)])


def test_compare_to_reference_is_paired_and_holm_corrected():
    rng = np.random.default_rng(3)
    base = rng.random(40)
    per_user = _per_user({"gravity": base + 0.2, "lamp": base + rng.normal(0, 0.05, 40), "prefalign": base + 0.15})
    table = compare_to_reference(per_user, "gravity")
    lamp = table.filter(method="lamp").row(0, named=True)
    ordered = per_user.sort("user_id")
    expected = stats.wilcoxon(ordered.filter(method="gravity")["value"], ordered.filter(method="lamp")["value"])
    assert lamp["statistic"] == pytest.approx(expected.statistic) and lamp["n_users"] == 40
    assert table["p_holm"].to_list() == pytest.approx(holm_adjust(table["p_value"].to_list()))
    assert lamp["mean_diff"] > 0


def test_per_user_metric_is_the_users_mean():
    got = per_user_metric(HAND, "preference_gain").filter(method="gravity")
    assert got.sort("user_id")["value"].to_list() == [1.0, 0.5]


def test_ablation_deltas_sign_and_test():
    rng = np.random.default_rng(5)
    full = rng.random(60)
    per_user = _per_user({"gravity": full, "no_interests": full - 0.1 + rng.normal(0, 0.02, 60),
                          "no_neuroticism": full + rng.normal(0, 0.05, 60)})
    table = ablation_deltas(per_user, "gravity")
    drop = table.filter(ablation="no_interests").row(0, named=True)
    assert drop["delta"] == pytest.approx(drop["ablated_mean"] - drop["full_mean"]) and drop["delta"] < -0.08
    assert drop["stars"] == "**" and drop["p_value"] < 0.01
    assert table.filter(ablation="no_neuroticism")["stars"].item() == ""


# ---------------------------------------------------------------- judge reliability

def test_ordering_consistency_hand_values():
    items = ordering_consistency(HAND).sort("user_id")
    # u1: winners gravity / a (disagree); rankings g>a>o vs a>g>o: tau = 1/3
    assert items["winner_agreement"].to_list() == [0.0, 0.0]
    assert items["mean_kendall_tau"].to_list() == pytest.approx([1 / 3, 1 / 3])


def test_first_position_rate_against_chance():
    shown_first_wins = _verdicts([("u1", "b1", 0, ["x", "y", "z"]), ("u1", "b1", 1, ["y", "z", "x"])])
    shown_first_wins = shown_first_wins.with_columns(pl.col("ranking").alias("candidates"))
    first = first_position_rate(shown_first_wins)
    assert first["rate"] == 1.0 and first["chance"] == pytest.approx(1 / 3)
    assert first["excess"] == pytest.approx(2 / 3)


def test_sanity_accuracy_and_judge_flags():
    sanity = pl.DataFrame({"user_id": ["u1", "u2", "u3", "u4"], "parent_asin": ["b"] * 4, "ordering": [0, 1, 0, 1],
                           "candidates": [["original", "degraded"], ["degraded", "original"]] * 2,
                           "ranking": [["original", "degraded"]] * 3 + [["degraded", "original"]]})
    assert sanity_accuracy(sanity) == 0.75
    with pytest.raises(ValueError, match="exactly the candidates"):
        sanity_accuracy(sanity.with_columns(pl.lit(["original", "lamp"]).alias("candidates")))
    reliability = judge_reliability(HAND, sanity)
    flags = judge_flags(reliability, JudgeThresholds())
    assert any("winner agreement" in f for f in flags) and any("sanity accuracy 0.750" in f for f in flags)
    good = {"winner_agreement": 0.9, "mean_kendall_tau": 0.7, "sanity_accuracy": 1.0, "first_position_excess": 0.02}
    assert judge_flags(good, JudgeThresholds()) == []
    assert judge_flags({**good, "first_position_excess": 0.3}, JudgeThresholds()) == [
        "first-position pick rate exceeds chance by 0.300 (more than 0.100): position bias"]
    assert judge_flags({**good, "sanity_accuracy": None}, JudgeThresholds()) == ["sanity accuracy was not measured"]
    with pytest.raises(ValidationError):
        JudgeThresholds(min_agreement=0.5)


TEXT = ("Our Chemical Hearts follows Henry Page, a teenager who has never fallen in love until Grace Town joins "
        "his class in 1998. Paired to work on the school newspaper, he discovers the excitement of first love! "
        "Over 300 breathtaking pages, Henry learns about loss. It is a truly unforgettable story about growing up. "
        "Set in New Jersey, it follows twenty-seven days of one stunning summer. Henry grows up.")


def test_degrade_description_drops_facts_and_is_deterministic():
    degraded = degrade_description(TEXT, seed=0)
    assert degraded == degrade_description(TEXT, seed=0)
    assert not re.search(r"\d", degraded)
    for fact in ("Henry", "Page", "Grace", "Town", "Jersey", "twenty", "seven", "1998", "300"):
        assert fact not in degraded
    for tone in ("!", "breathtaking", "truly", "unforgettable", "stunning"):
        assert tone not in degraded
    assert len(degraded) < 0.8 * len(TEXT)
    assert len(re.findall(r"[.!?]", degraded)) < len(re.findall(r"[.!?]", TEXT))
    assert {degrade_description("Henry grows up. It is about Henry.", seed=s) for s in range(8)} == \
        {"Someone grows up.", "It is about someone."}  # a name starting a sentence goes too
    variants = {degrade_description(TEXT, seed=s) for s in range(6)}
    assert len(variants) > 1


# ---------------------------------------------------------------- the paper's numbers

def test_paper_results_load_and_hold_the_papers_values():
    results = parse_paper_results((DATA / "paper_results.yaml").read_text())
    table2 = metric_frame(results.table2)
    assert table2["top1_win_rate"].sum() == pytest.approx(100.0)  # Table 2's win rates partition the verdicts
    gravity = results.table2.rows["gravity"]
    assert (gravity.top1_win_rate, gravity.preference_gain, gravity.interestingness, gravity.similarity) == \
        (26.75, 82.5, 4.03, 73.2)
    assert results.table5.full_preference_gain == 86.73 and len(results.table5.rows) == 10
    assert results.table6.rows["gravity_dpo"].preference_gain == 82.67
    assert set(results.per_country.countries) == {"USA", "Brazil", "Japan", "India"}
    assert results.per_country.countries["Japan"]["gravity"].preference_gain == 86.25
    assert results.per_genre.numbers_in_text is False
