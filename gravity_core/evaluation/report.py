"""The evaluation report's numbers (GRAVITY Table 2, Figures 2-3, plus the judge's reliability):
everything the report shows, computed from the judge's verdicts. Pure."""
from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from gravity_core.evaluation.bootstrap import bootstrap_intervals
from gravity_core.evaluation.breakdowns import metrics_by_group
from gravity_core.evaluation.metrics import method_metrics
from gravity_core.evaluation.reliability import JudgeThresholds, judge_flags, judge_reliability
from gravity_core.evaluation.stats import compare_to_reference, per_user_mean, per_user_metric

RANKING_COLUMNS = ["user_id", "parent_asin", "ordering", "judge_model", "candidates", "ranking"]
TESTED = {"top1_win_rate": "verdicts", "preference_gain": "verdicts", "interestingness": "score",
          "similarity": "similarity"}


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
    n_users: int = 0
    warnings: list[str] = field(default_factory=list)


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


def report_data(verdicts: pl.DataFrame, sanity: pl.DataFrame, similarity: pl.DataFrame, *, n_boot: int,
                seed: int, reference: str, thresholds: JudgeThresholds, countries: pl.DataFrame | None = None,
                genres: pl.DataFrame | None = None) -> ReportData:
    """Table 2's metrics, their user-bootstrap 95% intervals, the tests, the judge's reliability
    and the per-country / per-genre breakdowns.

    Takes: verdicts (Verdict rows, rankings and scores), sanity (Verdict rows of the sanity set),
    similarity (user_id, parent_asin, method, similarity), countries (user_id, country),
    genres (parent_asin, paper_category). Metrics are shares in [0, 1].
    """
    rankings, scores = split_verdicts(verdicts)
    if rankings.height == 0:
        raise ValueError("no ranking verdicts to report on: run the judge stage first")
    sanity_rankings = sanity.select(RANKING_COLUMNS) if sanity.height else sanity
    reliability, flags = _reliability(rankings, sanity_rankings, thresholds)
    data = ReportData(metrics=method_metrics(rankings, scores, similarity),
                      intervals=bootstrap_intervals(rankings, scores, similarity, n_boot=n_boot, seed=seed),
                      tests=_tests(rankings, scores, similarity, reference), reliability=reliability, flags=flags,
                      n_users=rankings["user_id"].n_unique())
    if countries is not None and countries.height:
        data.by_country = metrics_by_group(rankings, scores, similarity, countries, "user_id", "country")
    if genres is not None and genres.height:
        data.by_genre = metrics_by_group(rankings, scores, similarity, genres, "parent_asin", "paper_category")
    data.warnings = [f"judge {j} is below the reliability thresholds: {'; '.join(f)}" for j, f in flags.items() if f]
    return data
