"""Recipe section `profiles`."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ClassifierConfig(BaseModel):
    """How one inferred attribute is obtained: the LLM, or an HF text classifier."""

    model_config = ConfigDict(extra="forbid")
    backend: Literal["llm", "hf"] = Field("llm", description="llm = model layer; hf = text-classification pipeline")
    model: str | None = Field(None, description="hf: model name or local folder (e.g. a DeBERTa-v3 age classifier)")
    label_map: dict[str, str] = Field(default_factory=dict, description="hf: classifier label -> GRAVITY label")

    @model_validator(mode="after")
    def _check(self) -> "ClassifierConfig":
        if self.backend == "hf" and not self.model:
            raise ValueError("backend 'hf' needs model (name or path)")
        return self


class ProfilesConfig(BaseModel):
    """Profile construction (GRAVITY section 3.2, appendix B)."""

    model_config = ConfigDict(extra="forbid")
    interest_threshold: float = Field(0.10, gt=0, le=1, description="a genre is an interest if it covers this share of reviews")
    min_interests: int = Field(3, ge=1, description="keep at least this many top genres when available")
    max_interests: int = Field(5, ge=1, description="keep at most this many")
    values_batch_size: int = Field(25, ge=1, le=150, description="seed statements per value call (1 = paper)")
    review_token_budget: int = Field(1500, ge=100, description="tokens of review text shown to the model")
    review_chars_per_token: float = Field(4.0, gt=0, description="chars per token estimate for fitting reviews")
    max_review_chars: int = Field(600, ge=50, description="each review is cut to this many characters first")
    summary_max_sentences: int = Field(6, ge=1, le=12, description="value summary length cap (paper: 6)")
    scoring: Literal["likelihood", "generate"] = Field(
        "likelihood", description="stances and Big Five levels: score the closed labels (in-process "
                                  "likelihood, or an endpoint's top_logprobs) instead of generating JSON; "
                                  "falls back to generate where the backend cannot score")
    neutral_margin: float = Field(
        0.0, ge=0.0, description="scored stances: 'neutral' when support and no support are within this many "
                                 "nats (set on the sample by bench/bench_stances.py)")
    age: ClassifierConfig = ClassifierConfig()
    gender: ClassifierConfig = ClassifierConfig()
    personality: ClassifierConfig = ClassifierConfig()
    summary_max_tokens: int = Field(200, ge=16, description="generation cap for the value and user summaries")
    infer_country: bool = Field(True, description="infer a missing country from the reviews (never overrides a given one)")
    country_options: list[str] = Field(["USA", "Brazil", "Japan", "India"], min_length=1,
                                       description="countries an inferred country is chosen from (plus 'other'); "
                                                   "cohort.countries wins when set")

    @model_validator(mode="after")
    def _check(self) -> "ProfilesConfig":
        if self.min_interests > self.max_interests:
            raise ValueError("min_interests > max_interests")
        return self
