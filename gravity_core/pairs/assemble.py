"""Preference-pair assembly, vectorised with polars (GRAVITY section 3.3).

Every builder returns the same columns (PAIR_COLUMNS): pair_id, user_id, facet, source_id,
seed_id (value pairs), trait (personality pairs), heldout_key, task, chosen, rejected. `condition_on_profile` then prefixes each task with the
user's profile (the GRAVITY training template, paper Table 12) and `to_trl` shapes the
conversational prompt/chosen/rejected columns TRL's DPO trainer reads.
"""
from __future__ import annotations

import polars as pl

from gravity_core.phrasing import Phrasing

PAIR_COLUMNS = ["pair_id", "user_id", "facet", "source_id", "seed_id", "trait", "heldout_key", "task", "chosen",
                "rejected"]
_NONE = pl.lit(None, pl.String)


def _finish(frame: pl.LazyFrame, facet: str, source: pl.Expr, heldout: pl.Expr, seed_id: pl.Expr = _NONE,
            trait: pl.Expr = _NONE) -> pl.LazyFrame:
    return frame.with_columns(pl.lit(facet).alias("facet"), source.alias("source_id"),
                              heldout.cast(pl.String).alias("heldout_key"), seed_id.cast(pl.String).alias("seed_id"),
                              trait.cast(pl.String).alias("trait")).with_columns(
        pl.concat_str([pl.col("user_id"), pl.col("facet"), pl.col("source_id")], separator="|").alias("pair_id")
    ).select(PAIR_COLUMNS)


def value_pairs(stances: pl.LazyFrame, pool: pl.LazyFrame, seeds: pl.LazyFrame, phrasing: Phrasing) -> pl.LazyFrame:
    """Supported seed: aligned scenario chosen; not supported: reversed; neutral: omitted.

    Takes: stances (user_id, seed_id, stance), pool (scenario_id, seed_id, aligned, contradicting),
    seeds (seed_id, statement). Returns: PAIR_COLUMNS, source_id = heldout_key = scenario_id.
    """
    support = pl.col("stance") == "support"
    joined = (stances.filter(pl.col("stance") != "neutral").join(pool, on="seed_id")
              .join(seeds, on="seed_id").with_columns(
        pl.when(support).then("aligned").otherwise("contradicting").alias("chosen"),
        pl.when(support).then("contradicting").otherwise("aligned").alias("rejected"),
        pl.format(phrasing.value_task, "statement").alias("task")))
    return _finish(joined, "value", pl.col("scenario_id"), pl.col("scenario_id"), seed_id=pl.col("seed_id"))


def personality_pairs(levels: pl.LazyFrame, items: pl.LazyFrame, phrasing: Phrasing) -> pl.LazyFrame:
    """The response matching the user's trait level is chosen.

    Takes: levels (user_id, trait, level), items (item_id, trait, style, situation, high_response,
    low_response). Returns: PAIR_COLUMNS, source_id = heldout_key = item_id.
    """
    high = pl.col("level") == "high"
    joined = levels.join(items, on="trait").with_columns(
        pl.when(high).then("high_response").otherwise("low_response").alias("chosen"),
        pl.when(high).then("low_response").otherwise("high_response").alias("rejected"),
        pl.when(pl.col("style") == "dialogue").then(pl.format(phrasing.dialogue_task, "situation"))
        .otherwise(pl.col("situation")).alias("task"))
    return _finish(joined, "personality", pl.col("item_id"), pl.col("item_id"), trait=pl.col("trait"))


def _genre_text(prefix: str, phrasing: Phrasing) -> pl.Expr:
    return pl.format(phrasing.genre_option, pl.col(f"{prefix}_name"), pl.col(f"{prefix}_description"))


def category_pairs(interests: pl.LazyFrame, distinct: pl.LazyFrame, genres: pl.LazyFrame,
                   phrasing: Phrasing) -> pl.LazyFrame:
    """Each interest genre (chosen) against each genre most distinct from the top genre.

    Takes: interests (user_id, genre, rank; rank 0 = top genre), distinct (user_id, distinct_genre),
    genres (genre, name, description). Returns: PAIR_COLUMNS, source_id = 'liked>distinct'.
    """
    g = genres.select("genre", "name", "description")
    joined = (interests.join(distinct, on="user_id")
              .join(g.rename({"genre": "genre", "name": "c_name", "description": "c_description"}), on="genre")
              .join(g.rename({"genre": "distinct_genre", "name": "r_name", "description": "r_description"}),
                    on="distinct_genre")
              .with_columns(_genre_text("c", phrasing).alias("chosen"), _genre_text("r", phrasing).alias("rejected"),
                            pl.lit(phrasing.category_task).alias("task")))
    return _finish(joined, "interest-category", pl.format("{}>{}", "genre", "distinct_genre"), pl.lit(None))


def _top_books(books: pl.LazyFrame, owners: pl.LazyFrame, reviewed: pl.LazyFrame, per_genre: int,
               min_rating: float, genre_col: str) -> pl.LazyFrame:
    """Highly rated books of each owner's genres, never reviewed by that owner, ranked."""
    return (owners.join(books.filter(pl.col("average_rating") >= min_rating)
                        .rename({"genre": genre_col}), on=genre_col)
            .join(reviewed, on=["user_id", "parent_asin"], how="anti")
            .sort(["user_id", genre_col, "average_rating", "parent_asin"], descending=[False, False, True, False])
            .group_by(["user_id", genre_col], maintain_order=True).head(per_genre)
            .with_columns(pl.int_range(pl.len()).over("user_id").alias("k"),
                          pl.len().over("user_id").alias("n")))


def summary_pairs(interests: pl.LazyFrame, distinct: pl.LazyFrame, books: pl.LazyFrame, reviewed: pl.LazyFrame,
                  per_genre: int, min_rating: float, phrasing: Phrasing) -> pl.LazyFrame:
    """Descriptions of highly rated books from the user's top genres (chosen) against books of
    the distinct genres (rejected); a book the user reviewed is never used. Chosen book k is
    paired with rejected book k mod R.

    Takes: interests (user_id, genre), distinct (user_id, distinct_genre), books (parent_asin, title,
    description, genre, average_rating), reviewed (user_id, parent_asin). Returns: PAIR_COLUMNS.
    """
    books = books.select("parent_asin", "title", "description", "genre", "average_rating") \
        .filter(pl.col("description").str.len_chars() > 0)
    liked = _top_books(books, interests.select("user_id", "genre"), reviewed, per_genre, min_rating, "genre")
    other = _top_books(books, distinct.select("user_id", "distinct_genre"), reviewed, per_genre, min_rating,
                       "distinct_genre")
    pairs = (liked.join(other.select("user_id", pl.col("k").alias("rk"), pl.col("n").alias("rn"),
                                     pl.col("parent_asin").alias("r_asin"), pl.col("title").alias("r_title"),
                                     pl.col("description").alias("r_description")), on="user_id")
             .filter(pl.col("k") % pl.col("rn") == pl.col("rk"))
             .with_columns(pl.format(phrasing.book_option, "title", "description").alias("chosen"),
                           pl.format(phrasing.book_option, "r_title", "r_description").alias("rejected"),
                           pl.lit(phrasing.summary_task).alias("task")))
    return _finish(pairs, "interest-summary", pl.format("{}>{}", "parent_asin", "r_asin"), pl.lit(None))


def condition_on_profile(pairs: pl.LazyFrame, prefixes: pl.LazyFrame) -> pl.LazyFrame:
    """Prompt = the user's rendered profile head + task + tail (paper Table 12).

    Takes: pairs (PAIR_COLUMNS), prefixes (user_id, profile_version, system, head, tail).
    Returns: PAIR_COLUMNS + profile_version, system, prompt_text.
    """
    return pairs.join(prefixes, on="user_id").with_columns(
        pl.concat_str(["head", "task", "tail"]).alias("prompt_text")).drop("head", "tail")


def to_trl(pairs: pl.LazyFrame) -> pl.LazyFrame:
    """Conversational preference format: prompt (system + user turns), chosen and rejected
    (one assistant turn each). Takes: system, prompt_text, chosen, rejected."""
    return pairs.with_columns(
        pl.concat_list([chat_turn("system", pl.col("system")), chat_turn("user", pl.col("prompt_text"))]).alias("prompt"),
        pl.concat_list([chat_turn("assistant", pl.col("chosen"))]).alias("chosen_msgs"),
        pl.concat_list([chat_turn("assistant", pl.col("rejected"))]).alias("rejected_msgs"))


def chat_turn(role: str, content: pl.Expr) -> pl.Expr:
    """One chat message as a polars struct {role, content} (TRL's conversational format)."""
    return pl.struct(pl.lit(role).alias("role"), content.alias("content"))
