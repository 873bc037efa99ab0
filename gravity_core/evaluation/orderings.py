"""Position-balanced orderings of the candidates shown to the judge, and the balance check.

The paper (appendix D.3) shows the judge all descriptions at once; an LLM judge favours some
positions, so we show each (user, book) in several orderings taken from a cyclic Latin square.
"""
from __future__ import annotations

import random

import polars as pl


def latin_square_orderings(candidates: list[str], n_orderings: int | None, seed: int) -> list[list[str]]:
    """Rows of a cyclic Latin square over the candidates (paper mode: all N rows).

    The seed shuffles the base order and picks the starting row. With N rows every candidate is
    in every position exactly once; with k < N rows, the rows are evenly spaced in the square
    so each candidate still sits in k different, evenly spread positions.
    """
    n = len(candidates)
    if n == 0 or len(set(candidates)) != n:
        raise ValueError("candidates must be non-empty and distinct")
    k = n if n_orderings is None else n_orderings
    if not 1 <= k <= n:
        raise ValueError(f"n_orderings must be between 1 and {n} (the number of candidates), got {k}")
    rng = random.Random(seed)
    base = list(candidates)
    rng.shuffle(base)
    start = rng.randrange(n)
    rows = [(start + (i * n) // k) % n for i in range(k)]
    return [[base[(row + pos) % n] for pos in range(n)] for row in rows]


def _positions(verdicts: pl.DataFrame) -> pl.DataFrame:
    """One row per (verdict, shown candidate) with its 0-based position and the slate size."""
    return (verdicts.with_columns(pl.col("candidates").list.len().alias("n_candidates"))
            .explode("candidates")
            .with_columns(pl.int_range(pl.len()).over(pl.col("_verdict")).alias("position"))
            .rename({"candidates": "method"}))


def position_balance(verdicts: pl.DataFrame, by: list[str] | None = None) -> pl.DataFrame:
    """How often each method was shown in each position.

    Takes: candidates (List(String), method names in shown order) + the `by` columns.
    Returns: by..., n_candidates, method, position, n (zero-filled for positions never used),
    expected (the method's appearances / n_candidates), excess (n - expected).
    """
    by = list(by or [])
    keys = [*by, "n_candidates"]
    long = _positions(verdicts.select(*by, "candidates").with_row_index("_verdict"))
    counts = long.group_by(*keys, "method", "position").agg(pl.len().alias("n"))
    grid = (long.select(*keys, "method").unique()
            .join(long.select(*keys, "position").unique(), on=keys))
    return (grid.join(counts, on=[*keys, "method", "position"], how="left")
            .with_columns(pl.col("n").fill_null(0).cast(pl.Int64))
            .with_columns((pl.col("n").sum().over(*keys, "method") / pl.col("n_candidates")).alias("expected"))
            .with_columns((pl.col("n") - pl.col("expected")).alias("excess"))
            .sort(*keys, "method", "position"))


def position_balance_problems(verdicts: pl.DataFrame, by: list[str] | None = None,
                              tolerance: int = 0) -> list[str]:
    """Methods shown in some position more often than in another (beyond `tolerance`); [] if balanced.

    Takes: candidates (List(String)) + the `by` columns (e.g. ["user_id", "parent_asin"] to check
    every item, ["judge_model"] to check the whole run per judge).
    """
    table = position_balance(verdicts, by)
    keys = [*(by or []), "n_candidates", "method"]
    spread = (table.group_by(keys).agg(pl.col("n").min().alias("lo"), pl.col("n").max().alias("hi"),
                                       pl.col("position").sort_by("n").last().alias("most"))
              .filter(pl.col("hi") - pl.col("lo") > tolerance).sort(keys))
    return [f"{_label(row, keys)}: shown {row['lo']}-{row['hi']} times per position "
            f"(most often at position {row['most']}), allowed spread {tolerance}"
            for row in spread.iter_rows(named=True)]


def check_position_balance(verdicts: pl.DataFrame, by: list[str] | None = None, tolerance: int = 0) -> None:
    """Raise ValueError listing every imbalance found by `position_balance_problems`."""
    problems = position_balance_problems(verdicts, by, tolerance)
    if problems:
        raise ValueError("position balance is broken:\n" + "\n".join(problems))


def _label(row: dict, keys: list[str]) -> str:
    return ", ".join(f"{k}={row[k]}" for k in keys)
