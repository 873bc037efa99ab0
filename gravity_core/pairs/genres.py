"""Distinct genres for interest pairs: the genres least similar to a user's top genre,
by cosine similarity of sentence embeddings (all-MiniLM-L6-v2), searched with faiss."""
from __future__ import annotations

import faiss
import numpy as np
import polars as pl


def genre_texts(genres: pl.DataFrame) -> list[str]:
    """What is embedded per genre. Takes: genre, name, description."""
    return [f"{r['name']}: {r['description']}" for r in genres.iter_rows(named=True)]


def least_similar(vectors: np.ndarray, ids: list[str], k: int | None = None) -> dict[str, list[str]]:
    """For each genre, the other genres from lowest cosine similarity up (the first `k`, or all)."""
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    faiss.normalize_L2(matrix)
    index = faiss.IndexFlatIP(matrix.shape[1])
    index.add(matrix)
    _, order = index.search(matrix, len(ids))  # most similar first
    return {ids[i]: [ids[j] for j in order[i][::-1] if j != i][:k] for i in range(len(ids))}


def distinct_frame(interests: pl.DataFrame, distinct: dict[str, list[str]], k: int) -> pl.DataFrame:
    """Takes: interests (user_id, genre, rank). Returns: user_id, distinct_genre — the `k` genres
    least similar to each user's top genre (rank 0) that are not among the user's interests."""
    rows = []
    own = interests.group_by("user_id").agg(pl.col("genre"))
    top = interests.filter(pl.col("rank") == 0).join(own.rename({"genre": "own"}), on="user_id")
    for r in top.iter_rows(named=True):
        others = [g for g in distinct.get(r["genre"], []) if g not in r["own"]][:k]
        rows += [{"user_id": r["user_id"], "distinct_genre": g} for g in others]
    return pl.DataFrame(rows, schema={"user_id": pl.String, "distinct_genre": pl.String})
