"""Training-based methods beside GRAVITY (paper 4.1, 4.4, appendix D.2, Table 12): GRAVITY-SFT
(SFT on GRAVITY's chosen responses), UserSFT (persona + description -> the user's own review) and
PrefAlign (DPO on aligned vs misaligned descriptions written from demographics only).

Each reuses the training stage with its own data and its own adapter under `train/<method>/`,
and the generation stage with its own prompt. Pure.
"""
from __future__ import annotations

from typing import Any, Literal

import polars as pl

from gravity_core.layout import GRAVITY

TrainedBaseline = Literal["gravity_sft", "user_sft", "prefalign"]
TRAINED_BASELINES: tuple[str, ...] = ("gravity_sft", "user_sft", "prefalign")

# Appendix D.2: SFT (UserSFT, and GRAVITY-SFT in 4.4) 4-bit LoRA, lr 2e-4, 5 epochs; PrefAlign DPO
# lr 2e-5, 3 epochs. The recipe's `train:` section supplies everything else (base model, batch,
# max_length, a max_steps cap...), and `evaluate.train_overrides.<method>` has the last word.
PAPER_TRAIN: dict[str, dict[str, Any]] = {
    "gravity_sft": {"method": "sft", "learning_rate": 2e-4, "num_train_epochs": 5},
    "user_sft": {"method": "sft", "learning_rate": 2e-4, "num_train_epochs": 5},
    "prefalign": {"method": "dpo", "learning_rate": 2e-5, "num_train_epochs": 3},
}

def train_configs(train: dict[str, Any], trained: list[str], overrides: dict[str, dict[str, Any]]) -> dict[str, dict]:
    """The raw `train:` mapping of every method that trains: GRAVITY's is the recipe's own; a
    baseline's is the recipe's, then the paper's settings for it, then the recipe's overrides."""
    unknown = sorted(set(overrides) - set(TRAINED_BASELINES))
    if unknown:  # a typo; overrides of a known method that this run does not train are simply unused
        raise ValueError(f"evaluate.train_overrides names unknown methods {unknown}; use any of "
                         f"{list(TRAINED_BASELINES)}")
    return {GRAVITY: dict(train), **{m: {**train, **PAPER_TRAIN[m], **overrides.get(m, {})} for m in trained}}


def prefalign_books(reviewed: pl.DataFrame, catalogue: pl.DataFrame, interests: pl.DataFrame, minimum: int,
                    maximum: int | None, seed: int) -> pl.DataFrame:
    """PrefAlign's books per user (appendix D.2): every book the user reviewed (N); when N is
    below `minimum`, topped up with unreviewed books of the user's top genres; at most `maximum`.

    Takes: reviewed (user_id, parent_asin), catalogue (parent_asin, title, description, genre),
    interests (user_id, genre). Books without a description are skipped (nothing to rewrite).
    Returns: user_id, parent_asin, title, description, source ("reviewed" | "top_genre")."""
    books = catalogue.filter(pl.col("description").str.len_chars() > 0)
    own = (reviewed.join(books, on="parent_asin").with_columns(pl.lit("reviewed").alias("source"))
           .sort("user_id", "parent_asin"))
    have = own.group_by("user_id").len(name="n")
    users = reviewed.select("user_id").unique()
    need = users.join(have, on="user_id", how="left").with_columns(
        (pl.lit(minimum) - pl.col("n").fill_null(0)).clip(lower_bound=0).alias("need")).filter(pl.col("need") > 0)
    extra = (need.join(interests.select("user_id", "genre"), on="user_id")
             .join(books, on="genre")
             .join(reviewed, on=["user_id", "parent_asin"], how="anti")
             .unique(["user_id", "parent_asin"])
             .with_columns(pl.col("parent_asin").hash(seed).alias("_order"))
             .sort("user_id", "_order")
             .filter(pl.int_range(pl.len()).over("user_id") < pl.col("need"))
             .with_columns(pl.lit("top_genre").alias("source")))
    columns = ["user_id", "parent_asin", "title", "description", "source"]
    chosen = pl.concat([own.select(columns), extra.select(columns)])
    if maximum is not None:
        chosen = chosen.filter(pl.int_range(pl.len()).over("user_id") < maximum)
    return chosen.sort("user_id", "source", "parent_asin")
