"""Ablation deltas (GRAVITY section 4.3, Table 5): preference gain of each ablated model minus
the full model's, per user, with a paired Wilcoxon signed-rank test."""
from __future__ import annotations

import polars as pl

from gravity_core.evaluation.stats import compare_to_reference, significance_stars


def ablation_deltas(per_user: pl.DataFrame, full: str = "gravity",
                    ablations: list[str] | None = None) -> pl.DataFrame:
    """Per-user delta (ablated - full) of a metric, usually preference gain, for each ablation.

    Takes: per_user (user_id, method, value), e.g. `per_user_metric(verdicts, "preference_gain")`
    where the full model and each ablated model are methods.
    Returns: ablation, n_users, full_mean, ablated_mean, delta (ablated - full, negative = a
    drop, as in Table 5), statistic, p_value, p_holm, stars (from p_value, the paper's
    convention: Table 5 states no multiple-testing correction), stars_holm (from p_holm).
    """
    table = compare_to_reference(per_user, reference=full, methods=ablations)
    return table.select(
        pl.col("method").alias("ablation"), "n_users",
        pl.col("reference_mean").alias("full_mean"), pl.col("method_mean").alias("ablated_mean"),
        (-pl.col("mean_diff")).alias("delta"), "statistic", "p_value", "p_holm",
        pl.col("p_value").map_elements(significance_stars, return_dtype=pl.String).alias("stars"),
        pl.col("p_holm").map_elements(significance_stars, return_dtype=pl.String).alias("stars_holm"))
