"""Training config: TRL's own `DPOConfig`, extended with only what GRAVITY adds.

Imported lazily (TRL takes seconds to import); the recipe keeps `train:` as a mapping and
`parse_train_config` validates it, naming any unknown key.
"""
from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any, Literal

import pydantic

from trl import DPOConfig

from gravity_core.errors import describe_validation
from gravity_core.recipe import RecipeError
from gravity_core.training import keys


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
    cpu_bf16: bool = dataclasses.field(default=True, metadata={
        "help": "without CUDA, train with bf16 autocast where the CPU multiplies bf16 natively (AVX512-BF16 or "
                "AMX; about 2x faster DPO steps on such a 2-core machine); false keeps fp32. `bf16` is the GPU setting"})


def train_fields() -> list[str]:
    """Every key the `train:` section accepts (TRL's DPOConfig fields + GRAVITY's)."""
    return sorted(f.name for f in dataclasses.fields(GravityDPOConfig))


def check_train_keys(raw: dict[str, Any], known: list[str] | None = None) -> None:
    """`keys.check_train_keys` against `known` (a cached list of `train_fields()`) or TRL's own."""
    keys.check_train_keys(raw, known or train_fields())


_SCALARS = (bool, int, float)


@functools.lru_cache(maxsize=1)
def _scalar_fields() -> type[pydantic.BaseModel]:
    """A pydantic model of the config's number and switch fields (`x: float`, `y: bool | None`):
    TrainingArguments takes `learning_rate: "abc"` without complaint and fails only when training
    starts, after the model calls before it were paid for."""
    fields = {}
    for name, hint in typing.get_type_hints(GravityDPOConfig).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_args(hint) else [hint]
        if len(args) == 1 and args[0] in _SCALARS:
            fields[name] = (hint | None, None)
    return pydantic.create_model("TrainScalars", **fields)


def check_train_values(raw: dict[str, Any]) -> None:
    """Numbers where the config wants numbers, true/false where it wants a switch; errors name the key."""
    try:
        _scalar_fields().model_validate(raw)
    except pydantic.ValidationError as exc:
        raise RecipeError(describe_validation(exc, field="'train.{}': {}")) from None


def parse_train_config(raw: dict[str, Any]) -> GravityDPOConfig:
    """Validate and build the training config (keys first, then TRL's own checks).

    `report_to` must be set explicitly: where metrics go is never left to a library default."""
    check_train_keys(raw)
    check_train_values(raw)
    try:
        return GravityDPOConfig(**raw)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"'train': {exc}") from exc
