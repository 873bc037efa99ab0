"""Auto-evaluation metrics per method (GRAVITY section 4.1 and appendix D.3, Table 2).

Top-1 win rate, preference gain over the original description, mean interestingness, mean
similarity to the original, and Bradley-Terry strengths from the rankings' pairwise outcomes.
Shares are in [0, 1] (the paper prints percentages).
"""
from __future__ import annotations

import numpy as np
import polars as pl
from scipy import optimize
from scipy.sparse.csgraph import connected_components
from scipy.special import expit

ORIGINAL = "original"
VERDICT_KEYS = ["user_id", "parent_asin", "ordering", "judge_model"]


def validate_verdicts(verdicts: pl.DataFrame) -> None:
    """Raise ValueError unless every ranking is a permutation of its candidates.

    Takes: user_id, parent_asin, ordering, judge_model, candidates, ranking (List(String)).
    """
    missing = [c for c in [*VERDICT_KEYS, "candidates", "ranking"] if c not in verdicts.columns]
    if missing:
        raise ValueError(f"verdicts lack columns {missing}")
    bad = verdicts.filter(pl.col("candidates").list.sort() != pl.col("ranking").list.sort())
    bad = bad.vstack(verdicts.filter(pl.col("candidates").list.n_unique() != pl.col("candidates").list.len()))
    if bad.height:
        row = bad.row(0, named=True)
        raise ValueError(f"{bad.height} verdicts whose ranking is not a permutation of distinct candidates, "
                         f"e.g. user {row['user_id']}, book {row['parent_asin']}, ordering {row['ordering']}")
    if verdicts.select(VERDICT_KEYS).is_duplicated().any():
        raise ValueError("duplicate verdicts for the same (user_id, parent_asin, ordering, judge_model)")


def verdict_outcomes(verdicts: pl.DataFrame) -> pl.DataFrame:
    """One row per (verdict, method): its rank, whether it won, whether it beat the original.

    Takes: user_id, parent_asin, ordering, judge_model, candidates, ranking + any other columns.
    Returns: the verdict's columns except candidates/ranking, method, rank (0 = best),
    n_candidates, won (bool), above_original (bool; null for the original itself or when the
    original was not among the candidates).
    """
    validate_verdicts(verdicts)
    long = (verdicts.with_row_index("_verdict")
            .with_columns(pl.col("ranking").list.len().alias("n_candidates"))
            .drop("candidates").explode("ranking").rename({"ranking": "method"})
            .with_columns(pl.int_range(pl.len()).over("_verdict").alias("rank")))
    original = long.filter(pl.col("method") == ORIGINAL).select("_verdict", pl.col("rank").alias("_orig"))
    return (long.join(original, on="_verdict", how="left")
            .with_columns((pl.col("rank") == 0).alias("won"),
                          pl.when(pl.col("method") != ORIGINAL).then(pl.col("rank") < pl.col("_orig"))
                          .alias("above_original"))
            .drop("_verdict", "_orig"))


def pairwise_outcomes(verdicts: pl.DataFrame) -> pl.DataFrame:
    """The pairwise outcomes a full ranking implies: N(N-1)/2 (winner, loser) rows per verdict.

    Takes: the verdicts frame. Returns: user_id, parent_asin, ordering, judge_model, winner, loser.
    """
    long = verdict_outcomes(verdicts).select(*VERDICT_KEYS, "method", "rank")
    pairs = long.join(long, on=VERDICT_KEYS, suffix="_b").filter(pl.col("rank") < pl.col("rank_b"))
    return pairs.select(*VERDICT_KEYS, pl.col("method").alias("winner"), pl.col("method_b").alias("loser"))


def win_matrix(pairs: pl.DataFrame, methods: list[str]) -> np.ndarray:
    """wins[i, j] = how often methods[i] beat methods[j]. Takes: winner, loser."""
    index = {m: i for i, m in enumerate(methods)}
    counts = pairs.group_by("winner", "loser").agg(pl.len().alias("n"))
    wins = np.zeros((len(methods), len(methods)))
    for winner, loser, n in counts.iter_rows():
        wins[index[winner], index[loser]] += n
    return wins


def _bt_objective(free: np.ndarray, wins: np.ndarray, games: np.ndarray):
    """Negative log-likelihood, gradient and Hessian in the log-strengths; the last one is fixed at 0."""
    theta = np.append(free, 0.0)
    diff = theta[:, None] - theta[None, :]
    p = expit(diff)  # P(i beats j)
    nll = -np.sum(wins * np.log(np.maximum(p, 1e-300)))
    grad = (games * p).sum(axis=1) - wins.sum(axis=1)
    weight = games * p * p.T
    hess = np.diag(weight.sum(axis=1)) - weight
    return nll, grad[:-1], hess[:-1, :-1]


def bradley_terry(wins: np.ndarray, prior: float = 0.1, tol: float = 1e-10) -> np.ndarray:
    """Bradley-Terry strengths p (P(i beats j) = p_i / (p_i + p_j)), normalised to geometric mean 1.

    `wins[i, j]` counts i beating j. Fitted by maximum likelihood with scipy's trust-region Newton
    method (exact gradient and Hessian; an MM loop crawls when one method nearly always wins).
    `prior` adds that many pseudo-wins each way to every pair that was compared, keeping the
    estimate finite when a method always (or never) wins; prior=0 is the plain MLE.
    """
    games = wins + wins.T
    if np.any(games.sum(axis=1) == 0):
        raise ValueError("a method was never compared; Bradley-Terry strengths are undefined")
    if connected_components(games > 0, directed=False)[0] > 1:
        raise ValueError("the comparison graph is not connected; Bradley-Terry strengths are not identified")
    wins = wins + prior * (games > 0)
    games = wins + wins.T
    result = optimize.minimize(lambda f: _bt_objective(f, wins, games)[:2], np.zeros(len(wins) - 1), jac=True,
                               hess=lambda f: _bt_objective(f, wins, games)[2],
                               method="trust-exact", options={"gtol": tol})
    theta = np.append(result.x, 0.0)
    return np.exp(theta - theta.mean())


def _verdict_metrics(outcomes: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    return outcomes.group_by(*by, "method").agg(
        pl.len().alias("n_verdicts"), pl.col("won").mean().alias("top1_win_rate"),
        pl.col("above_original").mean().alias("preference_gain"))


def _mean_of(frame: pl.DataFrame, column: str, name: str, by: list[str]) -> pl.DataFrame:
    return frame.group_by(*by, "method").agg(pl.len().alias(f"n_{name}"), pl.col(column).mean().alias(name))


def _bt_frame(verdicts: pl.DataFrame, by: list[str], prior: float) -> pl.DataFrame:
    pairs = pairwise_outcomes(verdicts)
    groups = verdicts.select(*VERDICT_KEYS, *by)
    pairs = pairs.join(groups, on=VERDICT_KEYS) if by else pairs
    rows = []
    for key, part in (pairs.group_by(by) if by else [((), pairs)]):
        methods = sorted(set(part["winner"]) | set(part["loser"]))
        strengths = bradley_terry(win_matrix(part, methods), prior=prior)
        rows += [{**dict(zip(by, key)), "method": m, "bt_strength": float(s)} for m, s in zip(methods, strengths)]
    schema = {**{c: verdicts.schema[c] for c in by}, "method": pl.String, "bt_strength": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


def method_metrics(verdicts: pl.DataFrame, scores: pl.DataFrame, similarity: pl.DataFrame,
                   by: list[str] | None = None, bt_prior: float = 0.1) -> pl.DataFrame:
    """Table 2's metrics per method (and per `by` group, e.g. country or genre).

    Takes: verdicts (user_id, parent_asin, ordering, judge_model, candidates, ranking, by...);
    scores (user_id, parent_asin, method, score, by...); similarity (user_id, parent_asin,
    method, similarity, by...).
    Returns: by..., method, n_verdicts, top1_win_rate, preference_gain (null for the original),
    bt_strength (geometric mean 1 within each group), n_interestingness, interestingness,
    n_similarity, similarity; methods missing from a frame get nulls there.
    """
    by = list(by or [])
    keys = [*by, "method"]
    parts = [_verdict_metrics(verdict_outcomes(verdicts), by), _bt_frame(verdicts, by, bt_prior),
             _mean_of(scores, "score", "interestingness", by), _mean_of(similarity, "similarity", "similarity", by)]
    table = parts[0]
    for part in parts[1:]:
        table = table.join(part, on=keys, how="full", coalesce=True)
    return table.sort(keys)
