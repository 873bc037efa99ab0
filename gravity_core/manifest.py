"""The run manifest: one record per stage (status, seconds, artifacts, rows, model calls)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

StageStatus = Literal["running", "completed", "partial", "failed", "cached"]


class StageRecord(BaseModel):
    """What one stage did in this run. Artifact paths are relative to RUN_DIR."""

    status: StageStatus
    seconds: float = 0.0
    artifacts: dict[str, str] = Field(default_factory=dict)
    rows: dict[str, int] = Field(default_factory=dict)
    model_calls: dict[str, int] = Field(default_factory=lambda: {"made": 0, "cached": 0})
    failures: list[dict] = Field(default_factory=list, description="item -> reason")
    notes: dict[str, object] = Field(default_factory=dict)


class Manifest(BaseModel):
    run_id: str
    recipe_name: str
    recipe_hash: str
    stages: dict[str, StageRecord] = Field(default_factory=dict)

    def with_stage(self, name: str, record: StageRecord) -> "Manifest":
        return self.model_copy(update={"stages": {**self.stages, name: record}})
