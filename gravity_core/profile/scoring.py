"""Stances and Big Five levels read from label log-probabilities (pure).

A model scores the closed label set of each statement ("support" / "no support" / "neutral") or
trait ("high" / "low") instead of writing JSON. Small models rarely pick "neutral" by themselves,
so an unclear statement is also called neutral when the two sides are within `neutral_margin`
nats of each other: the calibrated neutral (the margin is set on the sample cohort's planted
stances by `bench/bench_stances.py`, which reports it).
"""
from __future__ import annotations

from collections import Counter

from gravity_core.profile.records import STANCES

LEVELS: tuple[str, ...] = ("high", "low")


def decide_stance(logprobs: dict[str, float], margin: float) -> str:
    """'neutral' when the model prefers it or when support and no support are within `margin`."""
    support, oppose = logprobs["support"], logprobs["no support"]
    if logprobs["neutral"] >= max(support, oppose) or abs(support - oppose) < margin:
        return "neutral"
    return "support" if support > oppose else "no support"


def decide_level(logprobs: dict[str, float]) -> str:
    return "high" if logprobs["high"] >= logprobs["low"] else "low"


def stances(scores: dict[str, dict[str, float]], margin: float) -> dict[str, str]:
    return {item: decide_stance(lp, margin) for item, lp in scores.items()}


def levels(scores: dict[str, dict[str, float]]) -> dict[str, str]:
    return {item: decide_level(lp) for item, lp in scores.items()}


def agreement(predicted: dict[str, str], truth: dict[str, str]) -> tuple[int, int]:
    """(agreeing, compared) over the keys both have."""
    keys = [k for k in truth if k in predicted]
    return sum(predicted[k] == truth[k] for k in keys), len(keys)


def majority_baseline(truth: list[str]) -> float:
    """Accuracy of always answering the most common true label."""
    if not truth:
        return 0.0
    return Counter(truth).most_common(1)[0][1] / len(truth)


def calibrate_margin(scored: list[tuple[dict[str, float], str]], grid: list[float] | None = None) -> tuple[float, float]:
    """The neutral margin with the best agreement over (log-probs, true stance) pairs; ties go to
    the smallest margin. Returns (margin, accuracy)."""
    grid = grid if grid is not None else [round(0.25 * i, 2) for i in range(0, 25)]
    best = (0.0, -1.0)
    for margin in grid:
        hits = sum(decide_stance(lp, margin) == truth for lp, truth in scored)
        accuracy = hits / len(scored) if scored else 0.0
        if accuracy > best[1]:
            best = (margin, accuracy)
    return best


__all__ = ["LEVELS", "STANCES", "agreement", "calibrate_margin", "decide_level", "decide_stance", "levels",
           "majority_baseline", "stances"]
