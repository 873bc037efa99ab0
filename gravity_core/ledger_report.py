"""Ledger totals per stage and per user (`gravity ledger RUN_DIR`)."""
from __future__ import annotations

import polars as pl

_AGG = [pl.len().alias("calls"), pl.col("cached").sum().alias("cached"),
        (~pl.col("cached")).sum().alias("made"), pl.col("attempts").sum().alias("attempts"),
        pl.col("input_tokens").sum().alias("input_tokens"), pl.col("output_tokens").sum().alias("output_tokens"),
        pl.col("latency_s").sum().round(2).alias("latency_s"), pl.col("queued_s").sum().round(2).alias("queued_s"),
        pl.col("cost_usd").sum().round(4).alias("cost_usd")]


def totals(ledger: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Takes: the ledger columns (stage, user_id, cached, attempts, tokens, latency_s, queued_s,
    cost_usd); queued_s is the part of latency_s spent waiting for a limiter slot.
    Returns: {'per stage': stage + totals, 'per user': user_id + totals, 'all': totals}."""
    return {"per stage": ledger.group_by("stage").agg(_AGG).sort("stage"),
            "per user": ledger.group_by("user_id").agg(_AGG).sort("user_id"),
            "all": ledger.select(_AGG)}
