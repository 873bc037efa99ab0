"""Configs of the preference-data and generation stages (recipe sections `scenarios`,
`pairs`, `generate`). Training extends TRL's own config: see `gravity_core.training.config`."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gravity_core.profile.records import Trait

Facet = Literal["interest-category", "interest-summary", "value", "personality"]


class ScenariosConfig(BaseModel):
    """Scenario pool (GRAVITY section 3.3): pairs per seed statement."""

    model_config = ConfigDict(extra="forbid")
    pairs_per_seed: int = Field(3, ge=1, le=10, description="scenario pairs per seed (paper: 3)")
    max_tokens: int = Field(400, ge=32, description="generation cap per scenario call")
    max_chars: int = Field(400, ge=60, description="longest scenario, in characters")
    pool_dir: str = Field(".gravity/pool", description="shared pool folder, reused by all users and later runs")
    temperature: float = Field(0.7, ge=0, le=2, description="sampling temperature")


class PairsConfig(BaseModel):
    """Preference pairs (GRAVITY section 3.3) and ablation switches (Table 5)."""

    model_config = ConfigDict(extra="forbid")
    distinct_genres: int = Field(3, ge=1, description="least-similar genres contrasted with the top genre")
    summary_books_per_genre: int = Field(5, ge=1, description="books per genre in summary pairs")
    min_book_rating: float = Field(4.0, ge=1, le=5, description="'highly rated' threshold for summary pairs")
    items_per_trait: int = Field(60, ge=1, description="personality items per trait (paper: 60, half per style)")
    embedding_model: str = Field("all-MiniLM-L6-v2", description="sentence-transformers name or path; default is bundled")
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="share of training examples kept for eval")
    heldout_fraction: float = Field(0.1, ge=0, lt=1, description="share of whole scenarios/items held out from training")
    drop_facets: list[Facet] = Field(default_factory=list, description="ablation: facets left out")
    drop_traits: list[Trait] = Field(default_factory=list, description="ablation: traits left out")


class GenerateConfig(BaseModel):
    """Personalized generation (GRAVITY section 3.5); the target books come from the `targets`
    stage (recipe section `evaluate`), shared by every method."""

    model_config = ConfigDict(extra="forbid")
    max_tokens: int = Field(200, ge=16, description="description length cap in tokens")
    temperature: float = Field(0.7, ge=0, le=2, description="sampling temperature")
    top_p: float = Field(0.9, gt=0, le=1, description="nucleus mass")
