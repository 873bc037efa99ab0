"""Typed, versioned records that cross stage boundaries (besides `Profile`, in
`gravity_core.profile.records`): preference pairs, generations and the judge's verdicts.

Each record names its schema version and declares its polars schema explicitly; writers add
the version column, readers refuse a file of another version with a clear error. Pure.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field


class RecordSchemaError(ValueError):
    """A file whose schema version or columns this version of GRAVITY cannot read."""


_MESSAGES = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))


class Record(BaseModel):
    """Base of the versioned records: `SCHEMA` is the version, `POLARS` the column types."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    SCHEMA: ClassVar[str]
    POLARS: ClassVar[dict[str, Any]]
    schema_version: str

    @classmethod
    def frame_schema(cls) -> dict[str, Any]:
        return {"schema_version": pl.String, **cls.POLARS}


class PreferencePair(Record):
    """One chosen/rejected pair conditioned on a user's profile (GRAVITY section 3.3)."""

    SCHEMA: ClassVar[str] = "pair-v2"
    POLARS: ClassVar[dict[str, Any]] = {
        "pair_id": pl.String, "user_id": pl.String, "facet": pl.String, "source_id": pl.String,
        "seed_id": pl.String, "trait": pl.String, "heldout_key": pl.String, "task": pl.String,
        "chosen": pl.String, "rejected": pl.String, "profile_version": pl.String, "system": pl.String,
        "prompt_text": pl.String, "pool_version": pl.String, "prompt_version": pl.String, "split": pl.String,
        "prompt": _MESSAGES, "chosen_msgs": _MESSAGES, "rejected_msgs": _MESSAGES}
    schema_version: str = SCHEMA
    pair_id: str
    user_id: str
    facet: Literal["interest-category", "interest-summary", "value", "personality"]
    source_id: str = Field(description="scenario, item, genre pair or book pair the example comes from")
    seed_id: str | None = Field(None, description="value pairs: the seed statement")
    trait: str | None = Field(None, description="personality pairs: the Big Five trait")
    heldout_key: str | None
    task: str
    chosen: str
    rejected: str
    profile_version: str
    system: str
    prompt_text: str
    pool_version: str
    prompt_version: str
    split: Literal["train", "eval", "heldout"]
    prompt: list[dict[str, str]]
    chosen_msgs: list[dict[str, str]]
    rejected_msgs: list[dict[str, str]]


class Generation(Record):
    """One description of one target book for one user by one method (GRAVITY 3.5, Table 12)."""

    SCHEMA: ClassVar[str] = "generation-v1"
    POLARS: ClassVar[dict[str, Any]] = {
        "user_id": pl.String, "parent_asin": pl.String, "method": pl.String, "title": pl.String,
        "genre": pl.String, "original": pl.String, "generated": pl.String, "profile_version": pl.String,
        "model": pl.String, "adapter": pl.String, "prompt_version": pl.String, "finish_reason": pl.String}
    schema_version: str = SCHEMA
    user_id: str
    parent_asin: str = Field(description="the target book")
    method: str = Field(description="gravity, a baseline's name, or original")
    title: str
    genre: str
    original: str
    generated: str
    profile_version: str
    model: str = Field(description="backend/model that wrote it")
    adapter: str | None = Field(None, description="LoRA adapter folder@content hash, if any")
    prompt_version: str
    finish_reason: str = "stop"


class Verdict(Record):
    """One judgement (paper D.3): a ranking of all candidates in one ordering, or a 1-5 score."""

    SCHEMA: ClassVar[str] = "verdict-v1"
    POLARS: ClassVar[dict[str, Any]] = {
        "user_id": pl.String, "parent_asin": pl.String, "kind": pl.String, "judge_model": pl.String,
        "ordering": pl.Int64, "candidates": pl.List(pl.String), "ranking": pl.List(pl.String),
        "method": pl.String, "score": pl.Int64, "prompt_version": pl.String}
    schema_version: str = SCHEMA
    user_id: str
    parent_asin: str
    kind: Literal["ranking", "score"]
    judge_model: str
    ordering: int = Field(0, description="which position-balanced ordering of the candidates was shown")
    candidates: list[str] = Field(default_factory=list, description="methods in the order shown")
    ranking: list[str] | None = Field(None, description="ranking: methods best first")
    method: str | None = Field(None, description="score: the method scored")
    score: int | None = Field(None, ge=1, le=5, description="score: interestingness 1-5")
    prompt_version: str


def records_frame(records: list[Record], cls: type[Record]) -> pl.DataFrame:
    """Records to a frame with the class's explicit schema (every row of the same class)."""
    return pl.DataFrame([r.model_dump() for r in records], schema=cls.frame_schema())


def check_frame(frame: pl.DataFrame, cls: type[Record], source: str) -> pl.DataFrame:
    """The frame if it carries `cls`'s schema version and columns, else `RecordSchemaError`."""
    if "schema_version" not in frame.columns:
        raise RecordSchemaError(f"{source}: no schema_version column; written by an older GRAVITY, re-run its stage")
    found = set(frame["schema_version"].unique().to_list()) - {cls.SCHEMA}
    if found:
        raise RecordSchemaError(f"{source}: schema version {sorted(found)[0]!r}, this GRAVITY reads "
                                f"{cls.SCHEMA!r}; re-run the stage that wrote it")
    expected = cls.frame_schema()
    wrong = [c for c, t in expected.items() if c not in frame.columns or frame.schema[c] != t]
    if wrong:
        raise RecordSchemaError(f"{source}: columns {wrong} missing or of the wrong type for {cls.SCHEMA}")
    return frame.select(list(expected))


def with_schema_version(frame: pl.DataFrame, cls: type[Record]) -> pl.DataFrame:
    """A stage's frame stamped with `cls`'s version and cast to its declared schema."""
    stamped = frame.with_columns(pl.lit(cls.SCHEMA).alias("schema_version"))
    return check_frame(stamped.select([pl.col(c).cast(t) for c, t in cls.frame_schema().items()]), cls, cls.SCHEMA)
