"""Ablation deltas (GRAVITY section 4.3, Table 5): preference gain of each ablated model minus
the full model's, per user, with a paired Wilcoxon signed-rank test."""
from __future__ import annotations

import numpy as np
import polars as pl

from gravity_core.evaluation.config import ABLATIONS
from gravity_core.evaluation.stats import compare_to_reference, paired_values, significance_stars


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


PREFIX = "ablate_"


def ablation_overrides(name: str) -> list[str]:
    """Recipe overrides of one ablated run: its subset left out of the pairs, GRAVITY alone trained."""
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; use one of {sorted(ABLATIONS)}")
    switch = ABLATIONS[name]
    return [f"pairs.drop_facets=[{', '.join(switch.get('drop_facets', []))}]",
            f"pairs.drop_traits=[{', '.join(switch.get('drop_traits', []))}]", "evaluate.trained=[]"]


def ablation_table(per_user: pl.DataFrame, names: list[str], full: str = "gravity", n_boot: int = 1000,
                   seed: int = 0, level: float = 0.95) -> pl.DataFrame:
    """Table 5 as the report reads it: per ablation its preference gain, the change from the full
    model (ablated - full, a share) with a percentile bootstrap interval over users, and the paired
    Wilcoxon p-value.

    Takes: per_user (user_id, method, value) with methods `full` and PREFIX + each name.
    Returns: ablation, pref_gain, delta, ci_low, ci_high, p_value, n_users."""
    deltas = ablation_deltas(per_user, full, [PREFIX + n for n in names])
    rng = np.random.default_rng(seed)
    rows = []
    for row in deltas.iter_rows(named=True):
        paired = paired_values(per_user, full, row["ablation"])  # the users ablation_deltas tested
        diff = (paired["other"] - paired["ref"]).to_numpy()
        boot = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(axis=1)
        tail = (1 - level) / 2
        rows.append({"ablation": row["ablation"].removeprefix(PREFIX), "pref_gain": row["ablated_mean"],
                     "delta": row["delta"], "ci_low": float(np.quantile(boot, tail)),
                     "ci_high": float(np.quantile(boot, 1 - tail)), "p_value": row["p_value"],
                     "n_users": row["n_users"]})
    return pl.DataFrame(rows, schema={"ablation": pl.String, "pref_gain": pl.Float64, "delta": pl.Float64,
                                      "ci_low": pl.Float64, "ci_high": pl.Float64, "p_value": pl.Float64,
                                      "n_users": pl.Int64})
