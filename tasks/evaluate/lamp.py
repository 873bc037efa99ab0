"""LaMP's retrieval (appendix D.2): the user's reviews of the k reviewed books whose descriptions
are most similar to the target's (all-MiniLM-L6-v2 embeddings, FAISS inner-product index)."""
from __future__ import annotations

import faiss
import numpy as np
import polars as pl

from tasks.embeddings import embed


def reviewed_books(reviews: pl.DataFrame, books: pl.DataFrame) -> pl.DataFrame:
    """Each user's reviewed books that have a description, one review per book.

    Takes: reviews (user_id, parent_asin, text, timestamp), books (parent_asin, description).
    Returns: user_id, parent_asin, description, review (the user's latest review text of it).
    """
    return (reviews.sort("timestamp", descending=True).unique(["user_id", "parent_asin"], keep="first")
            .join(books.select("parent_asin", "description"), on="parent_asin")
            .filter(pl.col("description").str.len_chars() > 0)
            .select("user_id", "parent_asin", "description", pl.col("text").alias("review"))
            .sort("user_id", "parent_asin"))


def nearest_reviews(history: pl.DataFrame, targets: list[str], k: int, model: str) -> list[list[str]]:
    """For each target description, the user's reviews of the k most similar reviewed books,
    most similar first. Takes: history (description, review) of one user."""
    if history.height == 0 or not targets:
        return [[] for _ in targets]
    index = faiss.IndexFlatIP(int(embed(["x"], model).shape[1]))
    index.add(np.ascontiguousarray(embed(history["description"].to_list(), model)))
    _, hits = index.search(np.ascontiguousarray(embed(targets, model)), min(k, history.height))
    reviews = history["review"].to_list()
    return [[reviews[i] for i in row if i >= 0] for row in hits]
