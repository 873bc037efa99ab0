"""The deployable pipeline's parameters: JSON values with descriptions, so that Prefect's UI
renders a form for them (recipe, overrides, output, stages, cohort filter). Pure."""
from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gravity_core.layout import STAGES

StageName = Literal["ingest", "profiles", "scenarios", "pairs", "train", "generate"]


class CohortFilter(BaseModel):
    """Which users to run; each field left empty keeps the recipe's own cohort settings."""

    model_config = ConfigDict(extra="forbid")
    user_ids: list[str] | None = Field(None, description="run exactly these users (they must pass min_reviews)")
    countries: list[str] | None = Field(None, description="only users from these countries")
    min_reviews: int | None = Field(None, ge=1, description="users with at least this many reviews")
    max_users: int | None = Field(None, ge=1, description="seeded cap on the cohort size")

    def as_overrides(self) -> list[str]:
        """The filter as recipe overrides of the `cohort` section."""
        return [f"cohort.{key}={json.dumps(value)}" for key, value in self.model_dump(exclude_none=True).items()]


def selected_stages(stages: list[str] | None) -> tuple[str, ...]:
    """The stages to run, in pipeline order (all when none are named)."""
    unknown = sorted(set(stages or []) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; known: {list(STAGES)}")
    return tuple(s for s in STAGES if not stages or s in stages)
