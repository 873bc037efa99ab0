"""Recipes: one YAML file, one typed config per stage, strict keys, `--set` overrides.

Parsing is pure: callers pass the YAML text. Unknown keys are errors naming the key.
"""
from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gravity_core.cohort import CohortConfig
from gravity_core.errors import describe_validation
from gravity_core.evaluation.config import EvaluateConfig
from gravity_core.llm_config import LLMConfig
from gravity_core.profile.config import ProfilesConfig
from gravity_core.stage_configs import GenerateConfig, PairsConfig, ScenariosConfig

PACKAGE_PREFIX = "package:"


class RecipeError(ValueError):
    """A recipe that cannot be used, with a message naming the offending key."""


class RunConfig(BaseModel):
    """Recipe section `run`."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("gravity", description="run name, recorded in the manifest")
    seed: int = Field(0, description="global seed for every sampled choice")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads (null = all cores)")
    max_failed_fraction: float = Field(0.0, ge=0, le=1, description="share of failed items (users, seeds) a stage "
                                       "may have and still count as completed; failures are always recorded")
    users_per_task: int = Field(1, ge=1, le=500, description="users per task run in the profiles stage and PrefAlign's "
                                "data: 1 shows each user (and facet) as its own task run; cohorts of thousands batch "
                                "them so that Prefect's per-task-run cost stays small (the model calls are the same)")


class DataConfig(BaseModel):
    """Recipe section `data`: where the Amazon Reviews 2023 files are."""

    model_config = ConfigDict(extra="forbid")
    reviews: list[str] = Field(..., min_length=1, description="review files (.jsonl, .jsonl.gz, .parquet); 'package:' = bundled")
    meta: list[str] = Field(..., min_length=1, description="item-metadata files, same formats")
    users: str | None = Field(None, description="known user attributes (csv/jsonl: user_id,country,age,gender)")


class BanksConfig(BaseModel):
    """Recipe section `banks`: which knowledge-bank rows a run uses."""

    model_config = ConfigDict(extra="forbid")
    seed_statements: str = Field("package:banks/seed_statements.jsonl", description="seed value statements file")
    personality_items: str = Field("package:banks/personality_items.jsonl", description="situational-judgement bank")
    genres: str = Field("package:banks/genres.yaml", description="genre taxonomy")
    trait_release: str | None = Field(None, description="local TRAIT release file to add to the personality bank")
    big5chat_release: str | None = Field(None, description="local Big5Chat release file to add")
    seed_limit: int | None = Field(None, ge=1, le=150, description="balanced subset of seeds; null = all 150")
    include_seeds: list[str] = Field(default_factory=list, description="seed ids always in the subset")


class Recipe(BaseModel):
    """A whole experiment. Each section is its own typed config."""

    model_config = ConfigDict(extra="forbid")
    run: RunConfig = RunConfig()
    data: DataConfig
    banks: BanksConfig = BanksConfig()
    cohort: CohortConfig = CohortConfig()
    llm: LLMConfig = LLMConfig()
    profiles: ProfilesConfig = ProfilesConfig()
    scenarios: ScenariosConfig = ScenariosConfig()
    pairs: PairsConfig = PairsConfig()
    train: dict[str, Any] = Field(default_factory=dict, description="TRL DPOConfig fields + GRAVITY extras; checked by training.config")
    generate: GenerateConfig = GenerateConfig()
    evaluate: EvaluateConfig = EvaluateConfig()


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.sub=value` overrides (value parsed as YAML) to a raw recipe dict."""
    try:  # a deep copy through YAML; a structure nested hundreds deep overflows the representer
        result = yaml.safe_load(yaml.safe_dump(raw)) or {}
    except (yaml.YAMLError, RecursionError) as exc:
        raise RecipeError(f"recipe cannot be copied for overrides: {str(exc)[:200]}") from exc
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"override {item!r} is not key=value")
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError(f"override {key!r}: {part!r} is not a section")
        node[parts[-1]] = _load_yaml(value, f"override {key.strip()!r}")
    return result


def _load_yaml(text: str, what: str) -> Any:
    """YAML text to data; any way it fails (deep nesting too) is a RecipeError naming `what`."""
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        raise RecipeError(f"{what}: invalid YAML: {exc}") from exc


def _describe(err: ValidationError, source: str) -> str:
    return f"recipe {source}: " + describe_validation(err)


def parse_recipe(text: str, overrides: list[str] | None = None, source: str = "<text>") -> Recipe:
    """YAML text (+ overrides) to a validated `Recipe`; errors name the offending key."""
    raw = _load_yaml(text, f"recipe {source}") or {}
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {source}: top level must be a mapping")
    raw = apply_overrides(raw, overrides or [])
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(_describe(exc, source)) from exc
    try:  # a recipe is recorded and hashed: YAML anchors can build cycles (train: &a {x: *a})
        recipe.model_dump_json()
    except ValueError as exc:
        raise RecipeError(f"recipe {source}: cannot be serialised: {exc}") from exc
    return recipe
