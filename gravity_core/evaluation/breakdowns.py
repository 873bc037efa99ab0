"""Metrics per country (GRAVITY Figure 2, Tables 14-17) and per book category (Figure 3).

The paper groups books into the user study's categories, clustered into fiction and
non-fiction; `paper_genre_groups.yaml` maps our taxonomy's genres onto them.
"""
from __future__ import annotations

from typing import Literal

import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, model_validator

from gravity_core.evaluation.metrics import method_metrics

UNKNOWN = "unmapped"


class PaperCategory(BaseModel):
    """One of the paper's book categories (Figure 4's list)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    name: str
    group: Literal["fiction", "nonfiction"]


class PaperGenreGroups(BaseModel):
    """The paper's categories and the category of each of our genre ids."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: str
    categories: list[PaperCategory]
    genres: dict[str, str]

    @model_validator(mode="after")
    def _known_categories(self) -> PaperGenreGroups:
        ids = {c.id for c in self.categories}
        unknown = sorted({c for c in self.genres.values() if c not in ids})
        if unknown:
            raise ValueError(f"genres map to unknown categories {unknown}")
        return self


def parse_paper_genre_groups(text: str) -> PaperGenreGroups:
    """The YAML text of `gravity_core/data/paper_genre_groups.yaml` to a validated mapping."""
    return PaperGenreGroups.model_validate(yaml.safe_load(text))


def check_covers(groups: PaperGenreGroups, genre_ids: list[str]) -> None:
    """Raise ValueError naming the taxonomy genres the mapping leaves out (or maps that do not exist)."""
    missing = sorted(set(genre_ids) - set(groups.genres))
    extra = sorted(set(groups.genres) - set(genre_ids))
    if missing or extra:
        raise ValueError(f"paper genre groups: unmapped genres {missing}, genres not in the taxonomy {extra}")


def paper_genre_table(groups: PaperGenreGroups) -> pl.DataFrame:
    """Returns: genre, paper_category, paper_category_name, fiction_group ("fiction" | "nonfiction")."""
    by_id = {c.id: c for c in groups.categories}
    rows = [{"genre": g, "paper_category": c, "paper_category_name": by_id[c].name, "fiction_group": by_id[c].group}
            for g, c in sorted(groups.genres.items())]
    return pl.DataFrame(rows, schema={k: pl.String for k in
                                      ("genre", "paper_category", "paper_category_name", "fiction_group")})


def assign_paper_genres(books: pl.DataFrame, groups: PaperGenreGroups) -> pl.DataFrame:
    """Each book's paper category and fiction/non-fiction group (Figure 3).

    Takes: parent_asin, genre (our taxonomy id or "unmapped"). Returns: parent_asin, genre,
    paper_category, paper_category_name, fiction_group; genres outside the mapping get "unmapped".
    """
    table = paper_genre_table(groups)
    return (books.select("parent_asin", "genre").join(table, on="genre", how="left")
            .with_columns(pl.col("paper_category", "paper_category_name", "fiction_group").fill_null(UNKNOWN)))


def _with_group(frame: pl.DataFrame, groups: pl.DataFrame, on: list[str], column: str) -> pl.DataFrame:
    return (frame.join(groups.select(*on, column).unique(), on=on, how="left")
            .with_columns(pl.col(column).fill_null(UNKNOWN)))


def metrics_by_group(verdicts: pl.DataFrame, scores: pl.DataFrame, similarity: pl.DataFrame,
                     groups: pl.DataFrame, on: str | list[str], column: str, bt_prior: float = 0.1) -> pl.DataFrame:
    """Table 2's metrics per group: per country (groups = users, on "user_id", column "country")
    or per book category (groups = `assign_paper_genres(...)`, on "parent_asin", column
    "paper_category" or "fiction_group").

    Takes: the three metric frames and `groups` (on..., column). Returns: column, then the
    columns of `method_metrics`; rows without a group fall in "unmapped" (never dropped).
    """
    on = [on] if isinstance(on, str) else list(on)
    if groups.select(on).is_duplicated().any():
        raise ValueError(f"groups has several {column} values for the same {on}")
    framed = [_with_group(f, groups, on, column) for f in (verdicts, scores, similarity)]
    return method_metrics(*framed, by=[column], bt_prior=bt_prior)
