"""Training data of the UserSFT baseline (paper 4.4): a book's description in, the user's own
review of it out, one example per review of each cohort user."""
from __future__ import annotations

import polars as pl

from gravity_core.pairs.assemble import chat_turn

def usersft_messages(reviews: pl.LazyFrame, books: pl.LazyFrame, users: list[str], task: str) -> pl.DataFrame:
    """`task` has two `{}`: the book's title and description.
    Takes: reviews (user_id, parent_asin, title, text), books (parent_asin, title, description).
    Returns: user_id, parent_asin, messages (user turn: description; assistant turn: the review)."""
    joined = (reviews.filter(pl.col("user_id").is_in(users)).select("user_id", "parent_asin", "text")
              .join(books.select("parent_asin", pl.col("title").alias("book_title"), "description"), on="parent_asin")
              .filter(pl.col("description").str.len_chars() > 0))
    prompt = pl.format(task, pl.col("book_title"), pl.col("description"))
    return (joined.with_columns(pl.concat_list([chat_turn("user", prompt), chat_turn("assistant", pl.col("text"))])
                                .alias("messages"))
            .select("user_id", "parent_asin", "messages").sort("user_id", "parent_asin").collect())
