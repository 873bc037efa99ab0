"""Training config: TRL's own `DPOConfig`, extended with only what GRAVITY adds.

Imported lazily (TRL takes seconds to import); the recipe keeps `train:` as a mapping and
`parse_train_config` validates it, naming any unknown key.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal

from trl import DPOConfig

from gravity_core.recipe import RecipeError


@dataclasses.dataclass
class GravityDPOConfig(DPOConfig):
    """TRL DPOConfig + the base model, LoRA/QLoRA settings and the training method."""

    base_model: str = dataclasses.field(default="smollm2-135m-instruct", metadata={"help": "model to tune"})
    method: Literal["dpo", "sft"] = dataclasses.field(default="dpo", metadata={"help": "dpo (GRAVITY) or sft"})
    lora_r: int = dataclasses.field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = dataclasses.field(default=32, metadata={"help": "LoRA alpha"})
    lora_dropout: float = dataclasses.field(default=0.05, metadata={"help": "LoRA dropout"})
    lora_target_modules: str = dataclasses.field(default="all-linear", metadata={"help": "LoRA targets"})
    quantization: Literal["none", "4bit"] = dataclasses.field(default="none", metadata={"help": "4bit = QLoRA"})
    heldout_eval_rows: int = dataclasses.field(default=200, metadata={"help": "held-out pairs scored after training"})


def train_fields() -> list[str]:
    """Every key the `train:` section accepts (TRL's DPOConfig fields + GRAVITY's)."""
    return sorted(f.name for f in dataclasses.fields(GravityDPOConfig))


def check_train_keys(raw: dict[str, Any], known: list[str] | None = None) -> None:
    """Unknown keys in the recipe's `train:` mapping are errors naming each key.

    Separate from construction: TrainingArguments also checks the hardware (a bf16 recipe
    cannot be constructed on a CPU machine, but its keys can still be checked there).
    `known` may come from a cache of `train_fields()` (importing TRL takes seconds)."""
    unknown = sorted(set(raw) - set(known or train_fields()))
    if unknown:
        raise RecipeError(f"unknown key(s) in 'train': {', '.join('train.' + k for k in unknown)}")


def parse_train_config(raw: dict[str, Any]) -> GravityDPOConfig:
    """Validate and build the training config (keys first, then TRL's own checks).

    `report_to` must be set explicitly: where metrics go is never left to a library default."""
    check_train_keys(raw)
    if "report_to" not in raw:
        raise RecipeError("'train.report_to' must be set explicitly (e.g. none, tensorboard, wandb, mlflow)")
    try:
        return GravityDPOConfig(**raw)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"'train': {exc}") from exc
