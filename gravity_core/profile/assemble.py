"""From ingested frames to per-user inputs, and from facets to profiles and their tables."""
from __future__ import annotations

import json

import polars as pl

from gravity_core.profile.records import (
    TRAITS, Demographics, Interests, Personality, Profile, Provenance, UserInput, UserReview, Values,
)


def build_user_inputs(reviews: pl.DataFrame, books: pl.DataFrame, cohort: pl.DataFrame,
                      users: pl.DataFrame | None) -> list[UserInput]:
    """One `UserInput` per cohort user, reviews joined to their book's title and genre.

    Takes: reviews (review_id, user_id, parent_asin, rating, title, text, timestamp),
    books (parent_asin, title, genre), cohort (user_id, country, country_source), users (user_id,
    age, gender).
    Returns: UserInput records sorted by user_id.
    """
    joined = (reviews.join(cohort.select("user_id"), on="user_id", how="semi")
              .join(books.select("parent_asin", pl.col("title").alias("book_title"), "genre"),
                    on="parent_asin", how="left")
              .with_columns(pl.col("genre").fill_null("unmapped"), pl.col("book_title").fill_null("")))
    attrs = cohort.select("user_id", "country", "country_source")
    if users is not None:
        attrs = attrs.join(users.select("user_id", "age", "gender"), on="user_id", how="left")
    else:
        attrs = attrs.with_columns(pl.lit(None, pl.Int64).alias("age"), pl.lit(None, pl.String).alias("gender"))
    grouped = {key[0]: frame for key, frame in joined.group_by("user_id")}
    return [_user_input(row, grouped.get(row["user_id"])) for row in attrs.sort("user_id").iter_rows(named=True)]


def _user_input(row: dict, frame: pl.DataFrame | None) -> UserInput:
    reviews = [] if frame is None else [
        UserReview(review_id=r["review_id"], parent_asin=r["parent_asin"], rating=r["rating"],
                   title=r["title"] or "", text=r["text"], timestamp=r["timestamp"], genre=r["genre"],
                   book_title=r["book_title"])
        for r in frame.sort("timestamp", "review_id").iter_rows(named=True)]
    return UserInput(user_id=row["user_id"], country=row["country"], country_source=row["country_source"], age=row["age"],
                     gender=row["gender"], reviews=tuple(reviews))


def assemble_profile(user: UserInput, demographics: Demographics, interests: Interests, values: Values,
                     personality: Personality, user_summary: str, models: dict[str, str],
                     prompts: dict[str, str], banks: dict[str, str]) -> Profile:
    """All facets of one user, with provenance (models, prompt versions, reviews, banks)."""
    provenance = Provenance(models=models, prompts=prompts, banks=banks,
                            review_ids=sorted({r.review_id for r in user.reviews}))
    return Profile(user_id=user.user_id, demographics=demographics, interests=interests, values=values,
                   personality=personality, user_summary=user_summary, provenance=provenance)


def profiles_frame(profiles: list[Profile]) -> pl.DataFrame:
    """Returns: user_id, profile_version, country, age, age_bin, gender, interests, one column per
    trait, value_summary, user_summary, n_support, n_no_support, n_neutral, n_reviews, and provenance:
    value_review_ids (the reviews the value prompts showed), review_ids, models, prompts, banks (JSON)."""
    rows = []
    for p in profiles:
        stances = list(p.values.stances.values())
        rows.append({"user_id": p.user_id, "profile_version": p.profile_version,
                     "country": p.demographics.country, "age": p.demographics.age,
                     "age_bin": p.demographics.age_bin, "gender": p.demographics.gender,
                     "interests": p.interests.genres, **{t: p.personality.levels[t] for t in TRAITS},
                     "value_summary": p.values.summary, "user_summary": p.user_summary,
                     "n_support": stances.count("support"), "n_no_support": stances.count("no support"),
                     "n_neutral": stances.count("neutral"), "n_reviews": len(p.provenance.review_ids),
                     "value_review_ids": p.values.review_ids, "review_ids": p.provenance.review_ids,
                     "models": json.dumps(p.provenance.models, sort_keys=True),
                     "prompts": json.dumps(p.provenance.prompts, sort_keys=True),
                     "banks": json.dumps(p.provenance.banks, sort_keys=True)})
    schema = {"user_id": pl.String, "profile_version": pl.String, "country": pl.String, "age": pl.Int64,
              "age_bin": pl.String, "gender": pl.String, "interests": pl.List(pl.String),
              **{t: pl.String for t in TRAITS}, "value_summary": pl.String, "user_summary": pl.String,
              "n_support": pl.Int64, "n_no_support": pl.Int64, "n_neutral": pl.Int64, "n_reviews": pl.Int64,
              "value_review_ids": pl.List(pl.String), "review_ids": pl.List(pl.String), "models": pl.String,
              "prompts": pl.String, "banks": pl.String}
    return pl.DataFrame(rows, schema=schema)


def stances_frame(profiles: list[Profile]) -> pl.DataFrame:
    """Returns: user_id, profile_version, seed_id, stance (one row per user x seed)."""
    rows = [{"user_id": p.user_id, "profile_version": p.profile_version, "seed_id": sid, "stance": stance}
            for p in profiles for sid, stance in p.values.stances.items()]
    return pl.DataFrame(rows, schema={"user_id": pl.String, "profile_version": pl.String,
                                      "seed_id": pl.String, "stance": pl.String})


def interests_frame(profiles: list[Profile]) -> pl.DataFrame:
    """Returns: user_id, genre, rank (0 = the user's top genre)."""
    return pl.DataFrame([{"user_id": p.user_id, "genre": g, "rank": i}
                         for p in profiles for i, g in enumerate(p.interests.genres)],
                        schema={"user_id": pl.String, "genre": pl.String, "rank": pl.Int64})


def levels_frame(profiles: list[Profile]) -> pl.DataFrame:
    """Returns: user_id, trait, level."""
    return pl.DataFrame([{"user_id": p.user_id, "trait": t, "level": lv}
                         for p in profiles for t, lv in p.personality.levels.items()],
                        schema={"user_id": pl.String, "trait": pl.String, "level": pl.String})
