"""Cohort selection and genre assignment (GRAVITY appendix A: users with >= 50 reviews, K per country)."""

from __future__ import annotations

import hashlib
from functools import reduce

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from gravity_core.banks import GenreTaxonomy

UNMAPPED = "unmapped"
_SEP = "\x1f"
Frame = pl.DataFrame | pl.LazyFrame


class CohortConfig(BaseModel):
    """Which reviewers form the cohort."""

    model_config = ConfigDict(extra="forbid")

    min_reviews: int = Field(50, ge=1, description="Keep users with at least this many reviews.")
    users_per_country: int | None = Field(
        None, ge=1, description="Seeded random sample of this many users per country; None keeps all.")
    countries: list[str] | None = Field(
        None, min_length=1, description="Only users from these countries (exact match); None keeps all.")
    max_users: int | None = Field(None, ge=1, description="Seeded cap on the cohort size, applied last.")
    seed: int = Field(0, description="Seed of the random sampling; same seed, same cohort.")


def _category_path() -> pl.Expr:
    cats = pl.col("categories")
    return pl.when(cats.list.first() == "Books").then(cats.list.slice(1)).otherwise(cats)


def _prefix_rule(path: tuple[str, ...]) -> pl.Expr:
    n = len(path)
    head = pl.col("_path").list.head(n).list.join(_SEP)
    return (pl.col("_path").list.len() >= n) & (head == _SEP.join(path))


def assign_genres(books: Frame, taxonomy: GenreTaxonomy) -> Frame:
    """Genre by longest matching category prefix after a leading "Books"; else "unmapped".

    Takes: categories (List(String)), other columns kept. Returns: those columns + genre.
    """
    rules = sorted(((path, g.id) for g in taxonomy.genres for path in g.match),
                   key=lambda rule: -len(rule[0]))
    genre = reduce(
        lambda chain, rule: chain.when(_prefix_rule(rule[0])).then(pl.lit(rule[1])),
        rules[1:], pl.when(_prefix_rule(rules[0][0])).then(pl.lit(rules[0][1])),
    ).otherwise(pl.lit(UNMAPPED))
    return (books.with_columns(_category_path().alias("_path"))
            .with_columns(genre.fill_null(UNMAPPED).alias("genre")).drop("_path"))


def _sample_key(user_id: str, seed: int) -> int:
    """Stable pseudo-random rank of a user for a seed (independent of polars' hash)."""
    digest = hashlib.blake2b(f"{seed}{_SEP}{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _sample(users: pl.DataFrame, n: int, seed: int, by: str | None = None) -> pl.DataFrame:
    """Seeded sample of n users (per `by` group when given); taking more extends the sample."""
    keys = pl.Series("_key", [_sample_key(u, seed) for u in users["user_id"]], dtype=pl.Int64)
    ranked = users.with_columns(keys).sort("_key")
    rank = pl.int_range(pl.len()).over(by) if by else pl.int_range(pl.len())
    return ranked.filter(rank < n).drop("_key")


def _reviewers(reviews: Frame, users: pl.DataFrame | None) -> pl.DataFrame:
    counts = reviews.lazy().group_by("user_id").agg(pl.len().cast(pl.Int64).alias("n_reviews"))
    if users is None:
        return counts.with_columns(pl.lit(None, pl.String).alias("country")).collect()
    if users["user_id"].is_duplicated().any():
        raise ValueError("users has duplicate user_id values")
    return counts.join(users.lazy().select("user_id", "country"), on="user_id", how="left").collect()


def _cohort_rules(cfg: CohortConfig):
    """(rule name, filter) in the order they apply; each filter takes and returns a frame."""
    rules = [("min_reviews", lambda df: df.filter(pl.col("n_reviews") >= cfg.min_reviews))]
    if cfg.countries is not None:
        rules.append(("countries", lambda df: df.filter(pl.col("country").is_in(cfg.countries))))
    if cfg.users_per_country is not None:
        rules.append(("no_country", lambda df: df.filter(pl.col("country").is_not_null())))
        rules.append(("users_per_country",
                      lambda df: _sample(df, cfg.users_per_country, cfg.seed, by="country")))
    if cfg.max_users is not None:
        rules.append(("max_users", lambda df: _sample(df, cfg.max_users, cfg.seed)))
    return rules


def _run_cohort(reviews: Frame, users: pl.DataFrame | None, cfg: CohortConfig):
    if users is None and (cfg.countries or cfg.users_per_country):
        raise ValueError("countries / users_per_country need a users table with a country column")
    df = _reviewers(reviews, users)
    funnel = [{"rule": "reviewers", "n_before": df.height, "n_dropped": 0, "n_after": df.height}]
    for name, apply in _cohort_rules(cfg):
        kept = apply(df)
        funnel.append({"rule": name, "n_before": df.height,
                       "n_dropped": df.height - kept.height, "n_after": kept.height})
        df = kept
    cohort = df.select("user_id", "country", "n_reviews").sort("user_id")
    return cohort, pl.DataFrame(funnel, schema={"rule": pl.String, "n_before": pl.Int64,
                                                "n_dropped": pl.Int64, "n_after": pl.Int64})


def select_cohort(reviews: Frame, users: pl.DataFrame | None, cfg: CohortConfig) -> pl.DataFrame:
    """The cohort (GRAVITY appendix A).

    Takes: reviews user_id; users user_id, country (optional).
    Returns: user_id, country (null when unknown), n_reviews; sorted by user_id.
    """
    return _run_cohort(reviews, users, cfg)[0]


def cohort_funnel(reviews: Frame, users: pl.DataFrame | None, cfg: CohortConfig) -> pl.DataFrame:
    """How many users each cohort rule dropped, in order.

    Takes: as select_cohort. Returns: rule, n_before, n_dropped, n_after.
    """
    return _run_cohort(reviews, users, cfg)[1]


def user_genre_shares(reviews: Frame, books: Frame) -> pl.DataFrame:
    """Per-user review counts and shares by genre; items without metadata count as "unmapped".

    Takes: reviews user_id, parent_asin; books parent_asin, genre.
    Returns: user_id, genre, n, share; sorted by user_id, n descending, genre.
    """
    genres = books.lazy().select("parent_asin", "genre").unique("parent_asin", keep="first")
    return (
        reviews.lazy().select("user_id", "parent_asin")
        .join(genres, on="parent_asin", how="left")
        .with_columns(pl.col("genre").fill_null(UNMAPPED))
        .group_by("user_id", "genre").agg(pl.len().cast(pl.Int64).alias("n"))
        .with_columns((pl.col("n") / pl.col("n").sum().over("user_id")).alias("share"))
        .sort(["user_id", "n", "genre"], descending=[False, True, False])
        .collect()
    )
