"""Personalized generation (GRAVITY section 3.5): target books and generation prompts."""
from __future__ import annotations

import polars as pl

# The template each trained method generates with. Table 12 gives no inference prompt for UserSFT;
# its training prompt is persona-based, so it generates from the persona like PrefAlign, whose
# "Final Description Generation Prompt" is DemoBased's wording.
GENERATION_PROMPT: dict[str, str] = {"gravity": "generate_description", "gravity_sft": "generate_description",
                                     "user_sft": "baseline_demo_based", "prefalign": "baseline_demo_based"}

GENERATION_SCHEMA = {"user_id": pl.String, "parent_asin": pl.String, "title": pl.String, "genre": pl.String,
                     "original": pl.String, "generated": pl.String, "profile_version": pl.String,
                     "model": pl.String, "adapter": pl.String, "prompt_version": pl.String,
                     "finish_reason": pl.String}


def select_targets(books: pl.LazyFrame, interests: pl.LazyFrame, reviewed: pl.LazyFrame, k: int,
                   min_rating: float) -> pl.DataFrame:
    """K books per user: highly rated, in the user's top genres, never reviewed by the user.

    Takes: books (parent_asin, title, description, genre, average_rating), interests (user_id,
    genre, rank), reviewed (user_id, parent_asin). Returns: user_id, parent_asin, title,
    description, genre — top genres first, then rating, ties by asin (deterministic)."""
    return (interests.join(books.filter((pl.col("average_rating") >= min_rating)
                                        & (pl.col("description").str.len_chars() > 0)), on="genre")
            .join(reviewed, on=["user_id", "parent_asin"], how="anti")
            .sort(["user_id", "rank", "average_rating", "parent_asin"], descending=[False, False, True, False])
            .group_by("user_id", maintain_order=True).head(k)
            .select("user_id", "parent_asin", "title", "description", "genre").collect())


def parse_description(text: str) -> str:
    """The generated description, or an error when the model wrote nothing usable."""
    clean = text.strip().strip('"').strip()
    if len(clean.split()) < 3:
        raise ValueError("generated description is empty or too short")
    return clean
