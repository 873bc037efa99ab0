"""The `train:` section's cheap checks, without importing TRL (which takes ~10 s on a small
CPU machine): unknown keys against a list of the accepted ones, and `report_to` set explicitly.
Building the section as TRL's own config (`gravity_core.training.config.parse_train_config`)
runs these first."""
from __future__ import annotations

from typing import Any

from gravity_core.recipe import RecipeError


def check_train_keys(raw: dict[str, Any], known: list[str]) -> None:
    """Unknown keys in the recipe's `train:` mapping are errors naming each key; `report_to`
    must be set (where metrics go is never left to a library default).

    Separate from construction: TrainingArguments also checks the hardware (a bf16 recipe
    cannot be constructed on a CPU machine, but its keys can still be checked there)."""
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise RecipeError(f"unknown key(s) in 'train': {', '.join('train.' + k for k in unknown)}")
    if "report_to" not in raw:
        raise RecipeError("'train.report_to' must be set explicitly (e.g. none, tensorboard, wandb, mlflow)")
