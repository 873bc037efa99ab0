"""Held-out evaluation of a trained adapter against its untrained base (GRAVITY 4.1).

Pure: takes per-example sequence log-probabilities, returns the metrics. DPO's implicit reward
of a response is beta * (log p_trained - log p_base)."""
from __future__ import annotations

import re
from statistics import fmean

VALUES_LINE = re.compile(r"^(Values: .*)$", re.MULTILINE)


def preference_metrics(rows: list[dict], beta: float) -> dict:
    """rows: {chosen_trained, rejected_trained, chosen_base, rejected_base} (sequence log-probs).

    Returns base and trained preference accuracy (log p chosen > log p rejected), the implicit
    reward accuracy and mean margin of the trained model with the base as reference."""
    if not rows:
        return {"n": 0}
    margins = [beta * ((r["chosen_trained"] - r["chosen_base"]) - (r["rejected_trained"] - r["rejected_base"]))
               for r in rows]
    return {"n": len(rows),
            "base_preference_accuracy": fmean(r["chosen_base"] > r["rejected_base"] for r in rows),
            "trained_preference_accuracy": fmean(r["chosen_trained"] > r["rejected_trained"] for r in rows),
            "implicit_reward_accuracy": fmean(m > 0 for m in margins),
            "mean_margin": fmean(margins)}


def with_stance(prompt_text: str, statement: str, supports: bool, probe: str) -> str:
    """The prompt with the reader's stance on one statement stated after the values line
    (`probe` has two `{}`: the statement and 'supports' / 'does not support')."""
    line = probe.format(statement, "supports" if supports else "does not support")
    if VALUES_LINE.search(prompt_text):
        return VALUES_LINE.sub(lambda m: f"{m.group(1)} {line}", prompt_text, count=1)
    return f"{line}\n{prompt_text}"


def sensitivity(rows: list[dict]) -> dict:
    """rows: {aligned_support, contra_support, aligned_oppose, contra_oppose} log-probs per model.

    A model is profile-sensitive on a pair when stating support makes it prefer the aligned
    scenario more than stating opposition does. Returns the share of such pairs."""
    if not rows:
        return {"n": 0}
    flips = [(r["aligned_support"] - r["contra_support"]) > (r["aligned_oppose"] - r["contra_oppose"]) for r in rows]
    return {"n": len(rows), "sensitive_share": fmean(flips)}
