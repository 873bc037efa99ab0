"""95% bootstrap intervals of the Table 2 metrics, resampling users (GRAVITY section 4.2).

A user's verdicts, scores and similarities are correlated, so the unit of resampling is the
user: each replicate draws users with replacement and recomputes every metric from the drawn
users' sums (exactly what recomputing on the concatenated frames would give).
"""
from __future__ import annotations

import numpy as np
import polars as pl

from gravity_core.evaluation.metrics import bradley_terry, pairwise_outcomes, verdict_outcomes


def _user_sums(frame: pl.DataFrame, value: str, users: list[str], methods: list[str]):
    """(sums, counts), each users x methods, of a value column over the frame's rows."""
    sums, counts = np.zeros((len(users), len(methods))), np.zeros((len(users), len(methods)))
    u_index = {u: i for i, u in enumerate(users)}
    m_index = {m: j for j, m in enumerate(methods)}
    agg = (frame.filter(pl.col(value).is_not_null())
           .group_by("user_id", "method").agg(pl.col(value).cast(pl.Float64).sum().alias("s"), pl.len().alias("n")))
    for user, method, s, n in agg.iter_rows():
        sums[u_index[user], m_index[method]] = s
        counts[u_index[user], m_index[method]] = n
    return sums, counts


def _user_wins(verdicts: pl.DataFrame, users: list[str], methods: list[str]) -> np.ndarray:
    """users x methods x methods: wins[u, i, j] = how often user u's verdicts put i above j."""
    wins = np.zeros((len(users), len(methods), len(methods)))
    u_index = {u: i for i, u in enumerate(users)}
    m_index = {m: j for j, m in enumerate(methods)}
    counts = pairwise_outcomes(verdicts).group_by("user_id", "winner", "loser").agg(pl.len().alias("n"))
    for user, winner, loser, n in counts.iter_rows():
        wins[u_index[user], m_index[winner], m_index[loser]] = n
    return wins


def _ratio(weights: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Weighted share per replicate (rows of `weights`) and method; nan where nothing was counted."""
    num, den = weights @ sums, weights @ counts
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _interval(estimate: np.ndarray, replicates: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1 - level) / 2
    ok = ~np.all(np.isnan(replicates), axis=0)
    low, high = np.full(estimate.shape, np.nan), np.full(estimate.shape, np.nan)
    low[ok] = np.nanquantile(replicates[:, ok], alpha, axis=0)
    high[ok] = np.nanquantile(replicates[:, ok], 1 - alpha, axis=0)
    return low, high


def bootstrap_intervals(verdicts: pl.DataFrame, scores: pl.DataFrame, similarity: pl.DataFrame,
                        n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                        bt_prior: float = 0.1, bradley_terry_ci: bool = True) -> pl.DataFrame:
    """Percentile bootstrap intervals per method and metric, resampling users with replacement.

    Takes: verdicts (user_id, ..., candidates, ranking); scores (user_id, method, score);
    similarity (user_id, method, similarity).
    Returns: method, metric (top1_win_rate | preference_gain | interestingness | similarity |
    bt_strength), estimate (on all users), ci_low, ci_high, n_boot; rows whose metric does not
    apply (e.g. the original's preference gain) are left out. Bradley-Terry intervals cost one
    fit per replicate; `bradley_terry_ci=False` skips them.
    """
    if n_boot < 1 or not 0 < level < 1:
        raise ValueError("need n_boot >= 1 and 0 < level < 1")
    outcomes = verdict_outcomes(verdicts)
    users = sorted(set(outcomes["user_id"]) | set(scores["user_id"]) | set(similarity["user_id"]))
    methods = sorted(set(outcomes["method"]) | set(scores["method"]) | set(similarity["method"]))
    stats = {"top1_win_rate": _user_sums(outcomes, "won", users, methods),
             "preference_gain": _user_sums(outcomes, "above_original", users, methods),
             "interestingness": _user_sums(scores, "score", users, methods),
             "similarity": _user_sums(similarity, "similarity", users, methods)}
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(users), np.full(len(users), 1 / len(users)), size=n_boot).astype(float)
    ones = np.ones((1, len(users)))
    rows = []
    for metric, (sums, counts) in stats.items():
        estimate = _ratio(ones, sums, counts)[0]
        rows += _rows(metric, methods, estimate, _ratio(weights, sums, counts), level, n_boot)
    if bradley_terry_ci:
        rows += _bt_rows(verdicts, users, weights, level, n_boot, bt_prior)
    return pl.DataFrame(rows, schema={"method": pl.String, "metric": pl.String, "estimate": pl.Float64,
                                      "ci_low": pl.Float64, "ci_high": pl.Float64, "n_boot": pl.Int64})


def _rows(metric: str, methods: list[str], estimate: np.ndarray, replicates: np.ndarray,
          level: float, n_boot: int) -> list[dict]:
    low, high = _interval(estimate, replicates, level)
    return [{"method": m, "metric": metric, "estimate": float(e), "ci_low": float(lo), "ci_high": float(hi),
             "n_boot": n_boot} for m, e, lo, hi in zip(methods, estimate, low, high) if not np.isnan(e)]


def _bt_rows(verdicts: pl.DataFrame, users: list[str], weights: np.ndarray, level: float,
             n_boot: int, prior: float) -> list[dict]:
    methods = sorted(set(verdict_outcomes(verdicts)["method"]))
    if len(methods) < 2:
        return []
    wins = _user_wins(verdicts, users, methods)
    estimate = bradley_terry(wins.sum(axis=0), prior=prior)
    replicates = np.full((len(weights), len(methods)), np.nan)
    for b, w in enumerate(weights):
        try:
            replicates[b] = bradley_terry(np.tensordot(w, wins, axes=1), prior=prior)
        except ValueError:  # a replicate whose drawn users leave the comparison graph disconnected
            continue
    return _rows("bt_strength", methods, estimate, replicates, level, n_boot)
