"""The evaluation report's numbers (GRAVITY Table 2, Figures 2-3, Tables 5-6, plus the judge's
reliability): everything the report shows, computed from the judge's verdicts. Pure."""
from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from gravity_core.evaluation.bootstrap import bootstrap_intervals
from gravity_core.evaluation.breakdowns import UNKNOWN, PaperGenreGroups, metrics_by_group
from gravity_core.evaluation.metrics import method_metrics
from gravity_core.evaluation.reliability import JudgeThresholds, judge_flags, judge_reliability
from gravity_core.evaluation.stats import compare_to_reference, per_user_mean, per_user_metric

RANKING_COLUMNS = ["user_id", "parent_asin", "ordering", "judge_model", "candidates", "ranking"]
TESTED = {"top1_win_rate": "verdicts", "preference_gain": "verdicts", "interestingness": "score",
          "similarity": "similarity"}
# Table 5's input, written by the ablation runner (see `ablation.ablation_deltas`): one row per
# ablated model; pref_gain, delta (ablated - full) and its CI are shares, not percent.
ABLATION_SCHEMA = {"ablation": pl.String, "pref_gain": pl.Float64, "delta": pl.Float64, "ci_low": pl.Float64,
                   "ci_high": pl.Float64, "p_value": pl.Float64, "n_users": pl.Int64}


@dataclass
class ReportData:
    """What the report shows; frames as documented on `report_data`."""

    metrics: pl.DataFrame
    intervals: pl.DataFrame
    tests: pl.DataFrame
    reliability: dict[str, dict]
    flags: dict[str, list[str]]
    by_country: pl.DataFrame | None = None
    by_genre: pl.DataFrame | None = None
    by_genre_group: pl.DataFrame | None = None
    ablations: pl.DataFrame | None = None
    reference: str = "gravity"
    n_users: int = 0
    warnings: list[str] = field(default_factory=list)


def check_ablations(ablations: pl.DataFrame) -> pl.DataFrame:
    """Table 5's input, validated and cast to ABLATION_SCHEMA (columns in that order).

    Raises ValueError on a missing column, a duplicated ablation, or values outside their range
    (percent where shares are expected)."""
    missing = sorted(set(ABLATION_SCHEMA) - set(ablations.columns))
    if missing:
        raise ValueError(f"ablations: missing columns {missing}")
    frame = ablations.select([pl.col(c).cast(t) for c, t in ABLATION_SCHEMA.items()])
    nulls = [c for c in frame.columns if frame[c].null_count()]
    if nulls or frame["ablation"].is_duplicated().any():
        raise ValueError(f"ablations: nulls in {nulls} or a duplicated ablation name")
    bounds = {"pref_gain": (0, 1), "delta": (-1, 1), "ci_low": (-1, 1), "ci_high": (-1, 1), "p_value": (0, 1)}
    bad = [c for c, (lo, hi) in bounds.items() if frame.filter(~pl.col(c).is_between(lo, hi)).height]
    if bad:
        raise ValueError(f"ablations: {bad} out of range (shares in [0, 1], deltas in [-1, 1], p in [0, 1])")
    return frame


def paper_categories(groups: PaperGenreGroups) -> pl.DataFrame:
    """The paper's book categories in Figure 4's order.

    Returns: paper_category, paper_category_name, fiction_group, order (0, 1, ...)."""
    return pl.DataFrame([{"paper_category": c.id, "paper_category_name": c.name, "fiction_group": c.group, "order": i}
                         for i, c in enumerate(groups.categories)],
                        schema={"paper_category": pl.String, "paper_category_name": pl.String,
                                "fiction_group": pl.String, "order": pl.Int64})


def split_verdicts(verdicts: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Verdict rows (kind, ...) to (rankings with RANKING_COLUMNS, scores: user_id, parent_asin, method, score)."""
    rankings = verdicts.filter(pl.col("kind") == "ranking").select(RANKING_COLUMNS)
    scores = verdicts.filter(pl.col("kind") == "score").select("user_id", "parent_asin", "method", "score")
    return rankings, scores


def _tests(rankings: pl.DataFrame, scores: pl.DataFrame, similarity: pl.DataFrame, reference: str) -> pl.DataFrame:
    """Paired Wilcoxon + Holm of the reference against every other method, per metric (users as units).

    Returns: metric, then `compare_to_reference`'s columns; empty when the reference is absent."""
    frames = []
    for metric, source in TESTED.items():
        per_user = (per_user_metric(rankings, metric) if source == "verdicts"
                    else per_user_mean(scores if source == "score" else similarity, source))
        if reference not in set(per_user["method"]):
            continue
        others = sorted(set(per_user["method"]) - {reference})
        users = set(per_user.filter(pl.col("method") == reference)["user_id"])
        others = [m for m in others if users & set(per_user.filter(pl.col("method") == m)["user_id"])]
        if others:
            table = compare_to_reference(per_user, reference, others)
            frames.append(table.with_columns(pl.lit(metric).alias("metric")))
    return pl.concat(frames).select("metric", pl.exclude("metric")) if frames else pl.DataFrame()


def _reliability(rankings: pl.DataFrame, sanity: pl.DataFrame, thresholds: JudgeThresholds):
    reliability, flags = {}, {}
    for judge in sorted(set(rankings["judge_model"])):
        mine = sanity.filter(pl.col("judge_model") == judge) if sanity.height else None
        reliability[judge] = judge_reliability(rankings.filter(pl.col("judge_model") == judge),
                                               mine if mine is not None and mine.height else None)
        flags[judge] = judge_flags(reliability[judge], thresholds)
    return reliability, flags


def _genre_breakdowns(frames: tuple, genres: pl.DataFrame, categories: pl.DataFrame | None):
    """(per category, per fiction group or None); categories named and in the paper's order."""
    by_genre = metrics_by_group(*frames, genres.select("parent_asin", "paper_category"), "parent_asin",
                                "paper_category")
    if categories is None:
        return by_genre, None
    named = (by_genre.join(categories, on="paper_category", how="left")
             .with_columns(pl.col("paper_category_name", "fiction_group").fill_null(UNKNOWN))
             .sort(pl.col("order").fill_null(len(categories)), "paper_category", "method").drop("order"))
    named = named.select("paper_category", "paper_category_name", "fiction_group", pl.exclude(
        "paper_category", "paper_category_name", "fiction_group"))
    groups = genres.select("parent_asin", "paper_category").join(
        categories.select("paper_category", "fiction_group"), on="paper_category", how="left")
    by_group = metrics_by_group(*frames, groups.select("parent_asin", "fiction_group"), "parent_asin",
                                "fiction_group")
    return named, by_group.sort("fiction_group", "method")


def report_data(verdicts: pl.DataFrame, sanity: pl.DataFrame, similarity: pl.DataFrame, *, n_boot: int,
                seed: int, reference: str, thresholds: JudgeThresholds, countries: pl.DataFrame | None = None,
                genres: pl.DataFrame | None = None, categories: pl.DataFrame | None = None,
                ablations: pl.DataFrame | None = None) -> ReportData:
    """Table 2's metrics, their user-bootstrap 95% intervals, the tests, the judge's reliability,
    the per-country / per-genre breakdowns and the ablations (Table 5), if any.

    Takes: verdicts (Verdict rows, rankings and scores), sanity (Verdict rows of the sanity set),
    similarity (user_id, parent_asin, method, similarity), countries (user_id, country),
    genres (parent_asin, paper_category), categories (`paper_categories`: names, fiction groups
    and the order of the paper's categories), ablations (ABLATION_SCHEMA). Metrics are shares in [0, 1].
    """
    rankings, scores = split_verdicts(verdicts)
    if rankings.height == 0:
        raise ValueError("no ranking verdicts to report on: run the judge stage first")
    sanity_rankings = sanity.select(RANKING_COLUMNS) if sanity.height else sanity
    reliability, flags = _reliability(rankings, sanity_rankings, thresholds)
    data = ReportData(metrics=method_metrics(rankings, scores, similarity),
                      intervals=bootstrap_intervals(rankings, scores, similarity, n_boot=n_boot, seed=seed),
                      tests=_tests(rankings, scores, similarity, reference), reliability=reliability, flags=flags,
                      reference=reference, n_users=rankings["user_id"].n_unique())
    if countries is not None and countries.height:
        data.by_country = metrics_by_group(rankings, scores, similarity, countries, "user_id", "country")
    if genres is not None and genres.height:
        data.by_genre, data.by_genre_group = _genre_breakdowns((rankings, scores, similarity), genres, categories)
    if ablations is not None:
        data.ablations = check_ablations(ablations)
    data.warnings = [f"judge {j} is below the reliability thresholds: {'; '.join(f)}" for j, f in flags.items() if f]
    return data
