"""How far the LLM judge (GRAVITY appendix D.3) can be trusted; not in the paper, which uses
GPT-4o with one ordering. We measure the judge's consistency across orderings, its position
bias, and its accuracy on a sanity set (the original description vs a degraded copy)."""
from __future__ import annotations

from itertools import combinations

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from gravity_core.evaluation.metrics import ORIGINAL, validate_verdicts

ITEM_KEYS = ["user_id", "parent_asin", "judge_model"]
DEGRADED = "degraded"


def _item_consistency(rankings: list[list[str]]) -> tuple[float, float]:
    """(share of ordering pairs with the same winner, mean Kendall's tau over ordering pairs)."""
    pairs = list(combinations(rankings, 2))
    same = [a[0] == b[0] for a, b in pairs]
    taus = []
    for a, b in pairs:
        methods = sorted(a)
        taus.append(stats.kendalltau([a.index(m) for m in methods], [b.index(m) for m in methods]).statistic)
    return float(np.mean(same)), float(np.mean(taus))


def ordering_consistency(verdicts: pl.DataFrame) -> pl.DataFrame:
    """Per (user, book, judge): agreement of the rankings across the orderings shown.

    Takes: the verdicts frame. Returns: user_id, parent_asin, judge_model, n_orderings,
    winner_agreement (share of ordering pairs naming the same winner; chance 1/N),
    mean_kendall_tau (mean Kendall's tau between the pairs' rankings; chance 0).
    Items judged in a single ordering are left out (nothing to agree with).
    """
    validate_verdicts(verdicts)
    grouped = (verdicts.sort("ordering").group_by(ITEM_KEYS, maintain_order=True)
               .agg(pl.col("ranking"), pl.len().alias("n_orderings"))
               .filter(pl.col("n_orderings") >= 2))
    rows = []
    for row in grouped.iter_rows(named=True):
        agreement, tau = _item_consistency(row["ranking"])
        rows.append({**{k: row[k] for k in ITEM_KEYS}, "n_orderings": row["n_orderings"],
                     "winner_agreement": agreement, "mean_kendall_tau": tau})
    return pl.DataFrame(rows, schema={"user_id": pl.String, "parent_asin": pl.String, "judge_model": pl.String,
                                      "n_orderings": pl.Int64, "winner_agreement": pl.Float64,
                                      "mean_kendall_tau": pl.Float64})


def first_position_rate(verdicts: pl.DataFrame) -> dict[str, float]:
    """How often the judge ranks first whatever it was shown first, against chance (mean 1/N).

    Takes: candidates, ranking. Returns: {"rate", "chance", "excess" (rate - chance), "n"}.
    """
    validate_verdicts(verdicts)
    first = verdicts.select((pl.col("ranking").list.first() == pl.col("candidates").list.first()).alias("hit"),
                            (1 / pl.col("candidates").list.len()).alias("chance"))
    rate, chance = float(first["hit"].mean()), float(first["chance"].mean())
    return {"rate": rate, "chance": chance, "excess": rate - chance, "n": first.height}


def sanity_accuracy(sanity: pl.DataFrame) -> float:
    """Share of sanity verdicts that prefer the original description over its degraded copy.

    Takes: user_id, parent_asin, ordering, candidates, ranking with candidates exactly
    {"original", "degraded"}. Returns: the share in [0, 1].
    """
    expected = sorted([ORIGINAL, DEGRADED])
    if sanity.height == 0:
        raise ValueError("the sanity set is empty")
    if sanity.filter(pl.col("candidates").list.sort() != pl.lit(expected)).height:
        raise ValueError(f"sanity verdicts must show exactly the candidates {expected}")
    if sanity.filter(pl.col("ranking").list.sort() != pl.lit(expected)).height:
        raise ValueError("a sanity ranking is not a permutation of its candidates")
    return float((sanity["ranking"].list.first() == ORIGINAL).mean())


def judge_reliability(verdicts: pl.DataFrame, sanity: pl.DataFrame | None = None) -> dict[str, float | None]:
    """The judge's reliability summary (one judge: filter `verdicts` by judge_model first).

    Returns: winner_agreement, mean_kendall_tau (means over items with >= 2 orderings; None
    when there are none), first_position_rate, first_position_chance, first_position_excess,
    sanity_accuracy (None without a sanity set), n_verdicts, n_items_multi_ordering.
    """
    items = ordering_consistency(verdicts)
    first = first_position_rate(verdicts)
    return {"winner_agreement": items["winner_agreement"].mean() if items.height else None,
            "mean_kendall_tau": items["mean_kendall_tau"].mean() if items.height else None,
            "first_position_rate": first["rate"], "first_position_chance": first["chance"],
            "first_position_excess": first["excess"],
            "sanity_accuracy": sanity_accuracy(sanity) if sanity is not None else None,
            "n_verdicts": verdicts.height, "n_items_multi_ordering": items.height}


class JudgeThresholds(BaseModel):
    """When a judge is too unreliable to report its rankings without a warning."""

    model_config = ConfigDict(extra="forbid")

    min_winner_agreement: float = Field(
        0.5, ge=0, le=1, description="Least share of ordering pairs that must name the same winner.")
    min_kendall_tau: float = Field(
        0.3, ge=-1, le=1, description="Least mean Kendall's tau between the rankings of different orderings.")
    min_sanity_accuracy: float = Field(
        0.9, ge=0, le=1, description="Least share of sanity items where the original beats its degraded copy.")
    max_first_position_excess: float = Field(
        0.1, ge=0, le=1, description="Most the first-shown candidate may win above its chance rate 1/N.")
    require_sanity: bool = Field(True, description="Flag a judge whose sanity accuracy was not measured.")
    require_multiple_orderings: bool = Field(
        True, description="Flag a judge with no item judged in two or more orderings (consistency unmeasured).")


def judge_flags(reliability: dict, thresholds: JudgeThresholds) -> list[str]:
    """The reasons a judge falls below the thresholds; [] for a judge that passes.

    Takes: the dict of `judge_reliability`.
    """
    flags = []
    checks = [("winner_agreement", thresholds.min_winner_agreement, "winner agreement across orderings",
               thresholds.require_multiple_orderings),
              ("mean_kendall_tau", thresholds.min_kendall_tau, "mean Kendall's tau between orderings",
               thresholds.require_multiple_orderings),
              ("sanity_accuracy", thresholds.min_sanity_accuracy, "sanity accuracy", thresholds.require_sanity)]
    for key, minimum, label, required in checks:
        value = reliability.get(key)
        if value is None:
            if required:
                flags.append(f"{label} was not measured")
        elif value < minimum:
            flags.append(f"{label} {value:.3f} is below {minimum:.3f}")
    excess = reliability.get("first_position_excess")
    if excess is not None and excess > thresholds.max_first_position_excess:
        flags.append(f"first-position pick rate exceeds chance by {excess:.3f} "
                     f"(more than {thresholds.max_first_position_excess:.3f}): position bias")
    return flags
