"""Training data of the training-based baselines (paper Table 12, appendix D.2), in TRL's
conversational formats. Pure: the templates are passed in.

- UserSFT: "You are a {age} {gender} from {country}. You recently read the book: {book} with the
  following description: {description} and this was your review:" -> the user's own review,
  one example per review of each cohort user (`messages`, SFT).
- PrefAlign: "You are a {age} {gender} from {country}. Which book description is more engaging
  and interesting?" -> chosen = the aligned description, rejected = the misaligned one (DPO).
"""
from __future__ import annotations

import polars as pl

from gravity_core.fences import fence
from gravity_core.prompts import PromptTemplate


def _turns(messages) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def usersft_messages(reviews: pl.LazyFrame, books: pl.LazyFrame, personas: dict[str, dict[str, str]],
                     template: PromptTemplate) -> pl.DataFrame:
    """Takes: reviews (user_id, parent_asin, text), books (parent_asin, title, description),
    personas {user_id: {age, gender, country}} (only these users). The book's title and description
    are fenced (stranger-written text).
    Returns: user_id, parent_asin, prompt_version, messages (system, user, assistant = the review)."""
    joined = (reviews.filter(pl.col("user_id").is_in(list(personas))).select("user_id", "parent_asin", "text")
              .join(books.select("parent_asin", pl.col("title").alias("book_title"), "description"), on="parent_asin")
              .filter(pl.col("description").str.len_chars() > 0).sort("user_id", "parent_asin").collect())
    rows = [{"user_id": r["user_id"], "parent_asin": r["parent_asin"], "prompt_version": template.version,
             "messages": _turns(template.render(**personas[r["user_id"]], book=fence(r["book_title"], "BOOK TITLE"),
                                                description=fence(r["description"], "BOOK DESCRIPTION")))
             + [{"role": "assistant", "content": r["text"]}]}
            for r in joined.iter_rows(named=True)]
    schema = {"user_id": pl.String, "parent_asin": pl.String, "prompt_version": pl.String,
              "messages": pl.List(pl.Struct({"role": pl.String, "content": pl.String}))}
    return pl.DataFrame(rows, schema=schema)


def prefalign_rows(pairs: list[dict], personas: dict[str, dict[str, str]], template: PromptTemplate) -> pl.DataFrame:
    """Takes: pairs [{user_id, parent_asin, aligned, misaligned}] (the generated descriptions).
    Pairs whose two sides are empty or identical teach nothing and are left out by the caller.
    Returns: user_id, parent_asin, prompt_version, prompt (system, user), chosen, rejected (one
    assistant turn each)."""
    rows = [{"user_id": p["user_id"], "parent_asin": p["parent_asin"], "prompt_version": template.version,
             "prompt": _turns(template.render(**personas[p["user_id"]])),
             "chosen": [{"role": "assistant", "content": p["aligned"]}],
             "rejected": [{"role": "assistant", "content": p["misaligned"]}]} for p in pairs]
    turns = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
    schema = {"user_id": pl.String, "parent_asin": pl.String, "prompt_version": pl.String, "prompt": turns,
              "chosen": turns, "rejected": turns}
    return pl.DataFrame(rows, schema=schema)
