"""Recipe section `evaluate` (GRAVITY section 4.1, appendix D.2-D.3): target books, prompting
baselines, the LLM judge and the report. Pure."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gravity_core.evaluation.reliability import JudgeThresholds
from gravity_core.evaluation.trained import TRAINED_BASELINES, TrainedBaseline
from gravity_core.llm_config import LLMConfig, StepOverride

PromptBaseline = Literal["base_rewrite", "demo_based", "user_summary", "lamp", "triagent"]
PROMPT_BASELINES: tuple[str, ...] = ("base_rewrite", "demo_based", "user_summary", "lamp", "triagent")

# Table 5's rows: which preference-data subset each ablation removes before retraining.
ABLATIONS: dict[str, dict[str, list[str]]] = {
    "user_interests": {"drop_facets": ["interest-category", "interest-summary"]},
    "category": {"drop_facets": ["interest-category"]},
    "summary": {"drop_facets": ["interest-summary"]},
    "values_beliefs": {"drop_facets": ["value"]},
    "personality": {"drop_facets": ["personality"]},
    **{trait: {"drop_traits": [trait]}
       for trait in ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")},
}


class EvaluateConfig(BaseModel):
    """Targets, prompting baselines (Table 12), the judge (D.3) and the report (Table 2)."""

    model_config = ConfigDict(extra="forbid")
    books_per_user: int = Field(1, ge=1, description="target books per user, shared by every method (paper: 5)")
    min_book_rating: float = Field(4.0, ge=1, le=5, description="targets are at least this well rated")
    baselines: list[PromptBaseline] = Field(list(PROMPT_BASELINES),
                                            description="prompting baselines to generate (Table 12)")
    trained: list[TrainedBaseline] = Field(list(TRAINED_BASELINES),
                                           description="training-based methods beside GRAVITY, each its own adapter "
                                           "(gravity_sft: paper 4.4; user_sft, prefalign: Table 12)")
    train_overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per trained method, `train:` keys that override the recipe's and the "
        "paper's settings for it, e.g. {user_sft: {max_steps: 4}}")
    ablations: list[str] = Field(list(ABLATIONS), description="gravity ablate: the Table 5 rows to retrain "
                                 "without (" + ", ".join(ABLATIONS) + ")")
    prefalign_books: int = Field(100, ge=1, description="PrefAlign: books per user (the reviewed ones, topped up "
                                 "from the top genres; paper: 100)")
    prefalign_max_books: int | None = Field(None, ge=1, description="PrefAlign: cap on books per user (cost "
                                            "control; null = every reviewed book, as in the paper)")
    prefalign_max_tokens: int = Field(300, ge=16, description="PrefAlign: length cap of a generated description")
    baseline_max_tokens: int = Field(300, ge=16, description="length cap of a baseline description, in tokens")
    baseline_temperature: float = Field(0.7, ge=0, le=2, description="sampling temperature of the baselines")
    edits_max_tokens: int = Field(200, ge=16, description="TriAgent: length cap of the suggested edits")
    lamp_reviews: int = Field(5, ge=1, le=20,
                              description="LaMP: reviews of the most similar books prepended (paper: 5)")
    embedding_model: str = Field("all-MiniLM-L6-v2", description="SentenceBERT model for LaMP retrieval and similarity")
    orderings: int | None = Field(None, ge=1, description="judge orderings per (user, book), Latin-square rows; "
                                  "null = all N (paper mode); capped at N")
    id_style: Literal["letters", "numbers"] = Field("letters", description="neutral ids shown to the judge")
    judge_max_tokens: int = Field(64, ge=8, description="length cap of a judge reply, in tokens")
    sanity: bool = Field(True, description="judge the original vs a degraded copy, in both orders")
    n_boot: int = Field(1000, ge=1, description="bootstrap replicates (users resampled) for the 95% intervals")
    reference: str = Field("gravity", description="method compared with every other one (Wilcoxon + Holm)")
    thresholds: JudgeThresholds = Field(JudgeThresholds(), description="when the judge is flagged unreliable")

    @field_validator("ablations")
    @classmethod
    def _known_ablations(cls, names: list[str]) -> list[str]:
        unknown = sorted(set(names) - set(ABLATIONS))
        if unknown:
            raise ValueError(f"unknown ablation(s) {unknown}; use any of {list(ABLATIONS)}")
        return names


def baselines_llm(llm: LLMConfig) -> LLMConfig:
    """The model layer with a `baselines` step: the recipe's own if set, else the `generate`
    step's backend and model without any adapter (the base model, appendix D.2)."""
    if "baselines" in llm.steps:
        return llm
    generate = llm.steps.get("generate")
    step = generate.model_copy(update={"adapter": None}) if generate else StepOverride()
    return llm.model_copy(update={"steps": {**llm.steps, "baselines": step}})
