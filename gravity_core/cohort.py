"""Cohort selection and genre assignment (GRAVITY appendix A: users with >= 50 reviews, K per country)."""

from __future__ import annotations

import hashlib
from datetime import date, datetime, time, timedelta, timezone
from functools import reduce
from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    user_ids: list[str] | None = Field(None, min_length=1, description="Only these users (a backfill of named "
                                       "users); None keeps all.")
    seed: int = Field(0, description="Seed of the random sampling; same seed, same cohort.")
    country_source: Literal["given", "inferred", "given_or_inferred"] = Field(
        "given", description="Which country the per-country rules use: the users file's (given), one inferred "
                             "from the reviews (inferred), or the given one where present, else inferred.")
    reviews_since: date | None = Field(
        None, description="Only users with a review on or after this day (ISO date, UTC); None: no lower bound.")
    reviews_until: date | None = Field(
        None, description="Only users with a review on or before this day (ISO date, UTC); None: no upper bound.")

    @model_validator(mode="after")
    def _window_in_order(self) -> "CohortConfig":
        if self.reviews_since and self.reviews_until and self.reviews_since > self.reviews_until:
            raise ValueError(f"reviews_since {self.reviews_since} is after reviews_until {self.reviews_until}")
        return self

    def has_window(self) -> bool:
        return self.reviews_since is not None or self.reviews_until is not None


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


def _epoch_ms(day: date) -> int:
    return int(datetime.combine(day, time(), tzinfo=timezone.utc).timestamp() * 1000)


def _in_window(cfg: CohortConfig) -> pl.Expr:
    """True for a review whose timestamp (epoch ms, as Amazon Reviews 2023) falls in the window;
    `reviews_until` includes its whole day."""
    ts, inside = pl.col("timestamp"), pl.lit(True)
    if cfg.reviews_since is not None:
        inside = inside & (ts >= _epoch_ms(cfg.reviews_since))
    if cfg.reviews_until is not None:
        inside = inside & (ts < _epoch_ms(cfg.reviews_until + timedelta(days=1)))
    return inside


def _reviewers(reviews: Frame, users: pl.DataFrame | None, cfg: CohortConfig | None = None) -> pl.DataFrame:
    """Per user: n_reviews, country, and (with a review-date window) in_window."""
    window = [_in_window(cfg).any().alias("in_window")] if cfg is not None and cfg.has_window() else []
    counts = reviews.lazy().group_by("user_id").agg(pl.len().cast(pl.Int64).alias("n_reviews"), *window)
    if users is None or "country" not in users.columns:
        return counts.with_columns(pl.lit(None, pl.String).alias("country")).collect()
    if users["user_id"].is_duplicated().any():
        raise ValueError("users has duplicate user_id values")
    return counts.join(users.lazy().select("user_id", "country"), on="user_id", how="left").collect()


def candidates(reviews: Frame, users: pl.DataFrame | None, cfg: CohortConfig) -> pl.DataFrame:
    """Users with at least `min_reviews` reviews, before any country rule.

    Takes: reviews user_id; users user_id, country (optional). Returns: user_id, country (given,
    null when unknown), n_reviews; sorted by user_id."""
    df = _reviewers(reviews, users)
    return df.filter(pl.col("n_reviews") >= cfg.min_reviews).select("user_id", "country", "n_reviews").sort("user_id")


def wants_countries(cfg: CohortConfig) -> bool:
    return cfg.countries is not None or cfg.users_per_country is not None


def to_infer(cands: pl.DataFrame, cfg: CohortConfig) -> list[str]:
    """The candidates whose country must be inferred before the country rules can apply:
    all of them for `country_source: inferred`, those without a given one for
    `given_or_inferred`, none for `given` or when no country rule is configured."""
    if cfg.country_source == "given" or not wants_countries(cfg):
        return []
    if cfg.country_source == "inferred":
        return cands["user_id"].to_list()
    return cands.filter(pl.col("country").is_null())["user_id"].to_list()


def _with_country(df: pl.DataFrame, inferred: pl.DataFrame | None, cfg: CohortConfig) -> pl.DataFrame:
    """The country each rule uses, per `country_source`, and where it came from."""
    given = pl.col("country")
    if inferred is None or cfg.country_source == "given":
        return df.with_columns(pl.when(given.is_not_null()).then(pl.lit("given")).otherwise(pl.lit("unknown"))
                               .alias("country_source"))
    joined = df.join(inferred.select("user_id", pl.col("country").alias("_inferred")), on="user_id", how="left")
    use_given = given.is_not_null() & (cfg.country_source == "given_or_inferred")
    return joined.with_columns(
        pl.when(use_given).then(given).otherwise(pl.col("_inferred")).alias("country"),
        pl.when(use_given).then(pl.lit("given")).when(pl.col("_inferred").is_not_null())
        .then(pl.lit("inferred:llm")).otherwise(pl.lit("unknown")).alias("country_source")).drop("_inferred")


def _cohort_rules(cfg: CohortConfig, any_country: bool):
    """(rule name, filter) in the order they apply; each filter takes and returns a frame. The
    country rules are left out when no candidate has a known country (see `country_warning`)."""
    rules = [("min_reviews", lambda df: df.filter(pl.col("n_reviews") >= cfg.min_reviews))]
    if cfg.user_ids is not None:
        rules.append(("user_ids", lambda df: df.filter(pl.col("user_id").is_in(cfg.user_ids))))
    if cfg.has_window():
        rules.append(("reviews_window", lambda df: df.filter(pl.col("in_window"))))
    if cfg.countries is not None and any_country:
        rules.append(("countries", lambda df: df.filter(pl.col("country").is_in(cfg.countries))))
    if cfg.users_per_country is not None and any_country:
        rules.append(("no_country", lambda df: df.filter(pl.col("country").is_not_null())))
        rules.append(("users_per_country",
                      lambda df: _sample(df, cfg.users_per_country, cfg.seed, by="country")))
    if cfg.max_users is not None:
        rules.append(("max_users", lambda df: _sample(df, cfg.max_users, cfg.seed)))
    return rules


def country_warning(cfg: CohortConfig, any_country: bool) -> str | None:
    """The one-line warning when per-country rules cannot apply because no country is known."""
    if any_country or not wants_countries(cfg):
        return None
    hint = ("give a users file with a country column, or set cohort.country_source: given_or_inferred"
            if cfg.country_source == "given" else "country inference found no country among the options")
    return f"no cohort user has a known country: per-country rules (countries, users_per_country) skipped; {hint}"


class CohortSelection(BaseModel):
    """The cohort, the funnel of how many users each rule dropped, and any warning."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    cohort: pl.DataFrame
    funnel: pl.DataFrame
    warning: str | None = None


def select_cohort(reviews: Frame, users: pl.DataFrame | None, cfg: CohortConfig,
                  inferred: pl.DataFrame | None = None) -> CohortSelection:
    """The cohort (GRAVITY appendix A).

    Takes: reviews user_id (and timestamp, epoch ms, when a review-date window is set); users
    user_id, country (optional); inferred user_id, country (the countries inferred for
    `to_infer`'s users, optional).
    Returns: cohort user_id, country (null when unknown), country_source, n_reviews (sorted by
    user_id); funnel rule, n_before, n_dropped, n_after."""
    df = _with_country(_reviewers(reviews, users, cfg), inferred, cfg)
    any_country = df.filter(pl.col("n_reviews") >= cfg.min_reviews)["country"].is_not_null().any()
    funnel = [{"rule": "reviewers", "n_before": df.height, "n_dropped": 0, "n_after": df.height}]
    for name, apply in _cohort_rules(cfg, any_country):
        kept = apply(df)
        funnel.append({"rule": name, "n_before": df.height, "n_dropped": df.height - kept.height,
                       "n_after": kept.height})
        df = kept
    return CohortSelection(
        cohort=df.select("user_id", "country", "country_source", "n_reviews").sort("user_id"),
        funnel=pl.DataFrame(funnel, schema={"rule": pl.String, "n_before": pl.Int64, "n_dropped": pl.Int64,
                                            "n_after": pl.Int64}),
        warning=country_warning(cfg, any_country))


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


def genre_coverage(reviews: Frame, books: Frame, top: int = 10) -> dict:
    """How much of the reviewed catalogue the taxonomy maps, and the most reviewed unmapped
    category paths (the first two levels after "Books"), so that the taxonomy can be extended.

    Takes: reviews parent_asin; books parent_asin, categories, genre.
    Returns: {reviewed_books, mapped_books, mapped_share, reviews_mapped_share, top_unmapped:
    [{path, reviews}]}."""
    reviewed = reviews.lazy().select("parent_asin").join(
        books.lazy().select("parent_asin", "genre", "categories"), on="parent_asin", how="left").with_columns(
        pl.col("genre").fill_null(UNMAPPED))
    per_book = reviewed.group_by("parent_asin").agg(pl.first("genre"), pl.first("categories"), pl.len().alias("n"))
    frame = per_book.collect()
    mapped = frame.filter(pl.col("genre") != UNMAPPED)
    unmapped = (frame.filter(pl.col("genre") == UNMAPPED).with_columns(_category_path().alias("_path"))
                .with_columns(pl.col("_path").list.head(2).list.join(" > ").fill_null("(no metadata)")
                              .replace("", "(no categories)").alias("path"))
                .group_by("path").agg(pl.col("n").sum().alias("reviews")).sort(["reviews", "path"],
                                                                              descending=[True, False]))
    total_reviews = int(frame["n"].sum() or 0)
    return {"reviewed_books": frame.height, "mapped_books": mapped.height,
            "mapped_share": round(mapped.height / frame.height, 4) if frame.height else None,
            "reviews_mapped_share": round(int(mapped["n"].sum() or 0) / total_reviews, 4) if total_reviews else None,
            "top_unmapped": unmapped.head(top).to_dicts()}
