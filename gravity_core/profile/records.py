"""Typed, versioned profile records (GRAVITY section 3.2)."""
from __future__ import annotations

import hashlib
import json
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

PROFILE_SCHEMA_VERSION = "profile-v2"
Stance = Literal["support", "no support", "neutral"]
STANCES: tuple[str, ...] = ("support", "no support", "neutral")
Level = Literal["high", "low"]
Trait = Literal["openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"]
TRAITS: tuple[str, ...] = get_args(Trait)
AgeBin = Literal["young", "middle-aged", "senior"]
AGE_BINS: tuple[str, ...] = ("young", "middle-aged", "senior")
GENDERS: tuple[str, ...] = ("female", "male")
AttributeSource = Literal["given", "inferred:llm", "inferred:hf", "unknown"]


def age_bin(age: int) -> str:
    """Paper's bins: young < 30, middle-aged 30-60 (both ends included), senior > 60."""
    if age < 30:
        return "young"
    return "middle-aged" if age <= 60 else "senior"


class UserReview(BaseModel):
    """The slice of a review the profile steps read."""

    model_config = ConfigDict(frozen=True)
    review_id: str
    parent_asin: str
    rating: float
    title: str = ""
    text: str
    timestamp: int
    genre: str = "unmapped"
    book_title: str = ""


class UserInput(BaseModel):
    """Everything known about one cohort user before profiling."""

    model_config = ConfigDict(frozen=True)
    user_id: str
    country: str | None = None
    country_source: AttributeSource = Field("given", description="given, or inferred by the cohort stage")
    age: int | None = None
    gender: str | None = None
    reviews: tuple[UserReview, ...]


class Demographics(BaseModel):
    """Given attributes win; missing ones are inferred, and `sources` says which is which
    (keys: country, age, gender)."""

    user_id: str
    country: str | None
    age: int | None
    age_bin: AgeBin | None
    gender: str | None
    sources: dict[str, AttributeSource]

    def describe(self) -> str:
        """'country: Japan; age: senior; gender: female' (known attributes only), or 'unknown'."""
        parts = [f"{label}: {value}" for label, value in (("country", self.country), ("age", self.age_bin),
                                                          ("gender", self.gender)) if value]
        return "; ".join(parts) or "unknown"


class Interests(BaseModel):
    user_id: str
    genres: list[str] = Field(description="top genres, most reviewed first")
    shares: dict[str, float] = Field(description="share of the user's reviews per interest genre")


class Values(BaseModel):
    user_id: str
    stances: dict[str, Stance]
    summary: str
    review_ids: list[str]
    calls: int
    method: Literal["generate", "likelihood", "logprobs"] = Field(
        "generate", description="how the stances were read: JSON written by the model, or scored labels")
    scores: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="scored methods: per seed, log-probabilities of the three labels")


class Personality(BaseModel):
    user_id: str
    levels: dict[str, Level]
    source: str
    scores: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="scored levels: per trait, log-probabilities of high and low")


class Provenance(BaseModel):
    models: dict[str, str] = Field(description="facet -> backend/model[+adapter]")
    prompts: dict[str, str] = Field(description="prompt name -> version")
    review_ids: list[str]
    banks: dict[str, str] = Field(description="bank -> version hash")


class Profile(BaseModel):
    """One user's profile: demographics, interests, values (+summary), OCEAN, user summary."""

    schema_version: str = PROFILE_SCHEMA_VERSION
    user_id: str
    demographics: Demographics
    interests: Interests
    values: Values
    personality: Personality
    user_summary: str
    provenance: Provenance

    @property
    def profile_version(self) -> str:
        """Content hash: changes whenever anything in the profile changes."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return f"{PROFILE_SCHEMA_VERSION}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"
