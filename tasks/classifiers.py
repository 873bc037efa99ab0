"""HF text-classification backends for demographics and personality (paper: DeBERTa-v3
age/gender classifiers, PersonalityLM). A model name downloads when a network is there;
a local folder works offline. Pipelines are loaded once per process."""
from __future__ import annotations

from functools import lru_cache

from gravity_core.profile.config import ClassifierConfig
from gravity_core.profile.records import TRAITS


@lru_cache(maxsize=8)
def _pipeline(model: str):
    from transformers import pipeline
    return pipeline("text-classification", model=model, tokenizer=model, top_k=None, truncation=True)


def _scores(cfg: ClassifierConfig, text: str) -> dict[str, float]:
    out = _pipeline(cfg.model)(text)
    rows = out[0] if out and isinstance(out[0], list) else out
    return {cfg.label_map.get(r["label"], r["label"]): float(r["score"]) for r in rows}


def hf_classify_label(cfg: ClassifierConfig, text: str, allowed: tuple[str, ...]) -> str:
    """The top label after `label_map` (e.g. 'LABEL_0' -> 'young'); it must be an allowed label."""
    scores = _scores(cfg, text)
    label = max(scores, key=scores.get)
    if label not in allowed:
        raise ValueError(f"classifier {cfg.model} predicted {label!r}, not one of {list(allowed)}; set label_map")
    return label


def hf_classify_levels(cfg: ClassifierConfig, text: str) -> dict[str, str]:
    """Multi-label trait scores -> high (>= 0.5) / low per trait; every trait must be mapped."""
    scores = _scores(cfg, text)
    missing = [t for t in TRAITS if t not in scores]
    if missing:
        raise ValueError(f"classifier {cfg.model} has no label for {missing}; set label_map")
    return {t: "high" if scores[t] >= 0.5 else "low" for t in TRAITS}
