"""The deployable pipeline's parameters: JSON values with descriptions, so that Prefect's UI
renders a form for them (recipe, overrides, output, stages, cohort filter). Pure."""
from __future__ import annotations

import json
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gravity_core.layout import STAGES

StageName = Literal["ingest", "profiles", "scenarios", "pairs", "train", "targets", "generate", "baselines", "judge",
                    "report"]


class CohortFilter(BaseModel):
    """Which users to run (a backfill's cohort spec); each field left empty keeps the recipe's own
    cohort settings."""

    model_config = ConfigDict(extra="forbid")
    user_ids: list[str] | None = Field(None, description="run exactly these users (they must pass min_reviews)")
    countries: list[str] | None = Field(None, description="only users from these countries")
    min_reviews: int | None = Field(None, ge=1, description="users with at least this many reviews")
    max_users: int | None = Field(None, ge=1, description="seeded cap on the cohort size")
    reviews_since: date | None = Field(
        None, description="only users with a review on or after this day (ISO date, e.g. 2023-01-01; UTC)")
    reviews_until: date | None = Field(
        None, description="only users with a review on or before this day (ISO date, e.g. 2023-06-30; UTC)")

    @model_validator(mode="after")
    def _window_in_order(self) -> "CohortFilter":
        if self.reviews_since and self.reviews_until and self.reviews_since > self.reviews_until:
            raise ValueError(f"reviews_since {self.reviews_since} is after reviews_until {self.reviews_until}")
        return self

    def as_overrides(self) -> list[str]:
        """The filter as recipe overrides of the `cohort` section (dates as ISO strings)."""
        values = self.model_dump(exclude_none=True, mode="json")
        return [f"cohort.{key}={json.dumps(value)}" for key, value in values.items()]


def trains(stages: list[str] | None) -> bool:
    """Whether these stages train a model (then the `train:` section is built as TRL's config
    before the first stage; otherwise only its keys are checked, without importing TRL)."""
    return "train" in selected_stages(stages)


def selected_stages(stages: list[str] | None) -> tuple[str, ...]:
    """The stages to run, in pipeline order (all when none are named)."""
    unknown = sorted(set(stages or []) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; known: {list(STAGES)}")
    return tuple(s for s in STAGES if not stages or s in stages)
