"""Significance of GRAVITY against each baseline (GRAVITY section 4.3: paired Wilcoxon signed-rank).

The unit is the user: each user's metric is the mean over their books (and orderings), and a
method is compared with the reference on the users both have. p-values across the family of
comparisons are Holm-corrected (statsmodels is not a dependency; Holm is a few lines).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
from scipy import stats

from gravity_core.evaluation.metrics import verdict_outcomes

VERDICT_METRICS = {"top1_win_rate": "won", "preference_gain": "above_original"}


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in input order; NaNs stay NaN and do not count in m."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    stepped = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted.tolist()


def paired_wilcoxon(x: Sequence[float], y: Sequence[float], alternative: str = "two-sided") -> tuple[float, float]:
    """scipy's Wilcoxon signed-rank test of paired samples: (statistic, p_value).

    When every difference is zero scipy's p-value is undefined; we return (0.0, 1.0): no evidence.
    """
    diff = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
    if len(diff) == 0:
        raise ValueError("no paired observations")
    if np.all(diff == 0):
        return 0.0, 1.0
    result = stats.wilcoxon(x, y, alternative=alternative)
    return float(result.statistic), float(result.pvalue)


def _per_user(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    return (frame.filter(pl.col(column).is_not_null())
            .group_by("user_id", "method")
            .agg(pl.col(column).cast(pl.Float64).mean().alias("value"), pl.len().alias("n"))
            .sort("user_id", "method"))


def per_user_metric(verdicts: pl.DataFrame, metric: str = "preference_gain") -> pl.DataFrame:
    """Each user's top-1 win rate or preference gain per method, the unit of the paired tests.

    Takes: the verdicts frame. Returns: user_id, method, value (Float64), n (verdicts averaged).
    """
    if metric not in VERDICT_METRICS:
        raise ValueError(f"unknown verdict metric {metric!r}; use one of {list(VERDICT_METRICS)}")
    return _per_user(verdict_outcomes(verdicts), VERDICT_METRICS[metric])


def per_user_mean(values: pl.DataFrame, column: str) -> pl.DataFrame:
    """Each user's mean of a per-description value (interestingness `score`, `similarity`) per method.

    Takes: user_id, method, `column`. Returns: user_id, method, value (Float64), n.
    """
    return _per_user(values, column)


def paired_values(per_user: pl.DataFrame, reference: str, method: str) -> pl.DataFrame:
    """The users with a value for both methods: user_id, ref, other (sorted by user)."""
    ref = per_user.filter(pl.col("method") == reference).select("user_id", pl.col("value").alias("ref"))
    other = per_user.filter(pl.col("method") == method).select("user_id", pl.col("value").alias("other"))
    return ref.join(other, on="user_id").sort("user_id")


def compare_to_reference(per_user: pl.DataFrame, reference: str = "gravity",
                         methods: list[str] | None = None, alternative: str = "two-sided") -> pl.DataFrame:
    """Paired Wilcoxon of the reference against each other method over users, Holm-corrected.

    Takes: per_user (user_id, method, value). Returns: method, n_users, reference_mean,
    method_mean, mean_diff (reference - method), statistic, p_value, p_holm.
    `alternative` is about reference - method ("greater": the reference is better).
    """
    methods = methods or sorted(set(per_user["method"]) - {reference})
    rows = []
    for method in methods:
        paired = paired_values(per_user, reference, method)
        if paired.height == 0:
            raise ValueError(f"no user has values for both {reference!r} and {method!r}")
        statistic, p_value = paired_wilcoxon(paired["ref"], paired["other"], alternative)
        rows.append({"method": method, "n_users": paired.height, "reference_mean": paired["ref"].mean(),
                     "method_mean": paired["other"].mean(),
                     "mean_diff": paired["ref"].mean() - paired["other"].mean(),
                     "statistic": statistic, "p_value": p_value})
    table = pl.DataFrame(rows, schema={"method": pl.String, "n_users": pl.Int64, "reference_mean": pl.Float64,
                                       "method_mean": pl.Float64, "mean_diff": pl.Float64,
                                       "statistic": pl.Float64, "p_value": pl.Float64})
    return table.with_columns(pl.Series("p_holm", holm_adjust(table["p_value"].to_list()), dtype=pl.Float64))


def significance_stars(p_value: float) -> str:
    """The paper's Table 5 marks: "**" for p < 0.01, "*" for p < 0.05, else ""."""
    return "**" if p_value < 0.01 else "*" if p_value < 0.05 else ""
