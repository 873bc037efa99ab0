"""The paper's published numbers (`gravity_core/data/paper_results.yaml`), typed, as frames to
print beside ours. Percent as printed in the paper; our metrics are shares (x 100 to compare)."""
from __future__ import annotations

import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricRow(_Strict):
    """One method's row of Tables 2, 4, 6 or 14-17 (null where the paper prints "-")."""

    top1_win_rate: float
    preference_gain: float | None = None
    interestingness: float
    similarity: float | None = None


class MetricTable(_Strict):
    caption: str
    judge: str
    rows: dict[str, MetricRow]


class AblationRow(_Strict):
    ablation: str
    parent: str | None
    delta: float
    stars: str


class AblationTable(_Strict):
    caption: str
    judge: str
    full_preference_gain: float
    rows: list[AblationRow]


class CountryTables(_Strict):
    caption: str
    judge: str
    countries: dict[str, dict[str, MetricRow]]


class GenreClaims(_Strict):
    caption: str
    numbers_in_text: bool
    claims: list[str]


class PaperResults(_Strict):
    """Tables 2, 4, 5, 6, Tables 14-17 (Figure 2) and Figure 3's claims."""

    version: str
    units: dict[str, str]
    methods: dict[str, str]
    table2: MetricTable
    table4: MetricTable
    table5: AblationTable
    table6: MetricTable
    per_country: CountryTables
    per_genre: GenreClaims

    @model_validator(mode="after")
    def _known_methods(self) -> PaperResults:
        tables = [self.table2.rows, self.table4.rows, *self.per_country.countries.values()]
        unknown = sorted({m for rows in tables for m in rows} - set(self.methods))
        if unknown:
            raise ValueError(f"rows for methods not listed under `methods`: {unknown}")
        return self


def parse_paper_results(text: str) -> PaperResults:
    """The YAML text of `paper_results.yaml` to typed tables (unknown keys are errors)."""
    return PaperResults.model_validate(yaml.safe_load(text))


def metric_frame(table: MetricTable) -> pl.DataFrame:
    """Returns: method, top1_win_rate, preference_gain, interestingness, similarity (percent, as printed)."""
    rows = [{"method": m, **r.model_dump()} for m, r in table.rows.items()]
    return pl.DataFrame(rows, schema={"method": pl.String, "top1_win_rate": pl.Float64,
                                      "preference_gain": pl.Float64, "interestingness": pl.Float64,
                                      "similarity": pl.Float64})


def country_frame(tables: CountryTables) -> pl.DataFrame:
    """Returns: country, then the columns of `metric_frame` (Tables 14-17)."""
    frames = [metric_frame(MetricTable(caption=tables.caption, judge=tables.judge, rows=rows))
              .with_columns(pl.lit(country).alias("country")) for country, rows in tables.countries.items()]
    return pl.concat(frames).select("country", pl.exclude("country"))


def ablation_frame(table: AblationTable) -> pl.DataFrame:
    """Returns: ablation, parent, delta (percentage points), stars (Table 5)."""
    return pl.DataFrame([r.model_dump() for r in table.rows],
                        schema={"ablation": pl.String, "parent": pl.String, "delta": pl.Float64, "stars": pl.String})


# Figure 3 prints no numbers; its claims give group levels. (fiction_group, relation, percent,
# which claim says it); `genre_claims` checks each number against the YAML's claim text.
FIGURE3_LEVELS = [("fiction", ">", 70.0, 0, "caption"), ("fiction", ">", 75.0, 1, "text"),
                  ("nonfiction", "≈", 65.0, 0, "caption"), ("nonfiction", "≈", 65.0, 1, "text")]


def genre_claims(claims: GenreClaims) -> pl.DataFrame:
    """Figure 3's claimed preference-gain levels of GRAVITY per fiction group.

    Returns: fiction_group, relation (">" | "≈"), value (percent), source ("caption" | "text").
    Raises ValueError when a level is not in the claim it is read from (the YAML changed)."""
    for group, _, value, index, _ in FIGURE3_LEVELS:
        if index >= len(claims.claims) or f"{value:g}%" not in claims.claims[index]:
            raise ValueError(f"Figure 3 level {value:g}% ({group}) is not in claim {index} of per_genre")
    return pl.DataFrame([{"fiction_group": g, "relation": r, "value": v, "source": s}
                         for g, r, v, _, s in FIGURE3_LEVELS],
                        schema={"fiction_group": pl.String, "relation": pl.String, "value": pl.Float64,
                                "source": pl.String})


def sft_vs_dpo_frame(table: MetricTable) -> pl.DataFrame:
    """Table 6's GRAVITY rows under our method names: gravity_sft, and gravity_dpo as `gravity`.

    Returns: the columns of `metric_frame`, rows gravity_sft then gravity."""
    frame = metric_frame(table).filter(pl.col("method").is_in(["gravity_sft", "gravity_dpo"]))
    return frame.with_columns(pl.col("method").replace({"gravity_dpo": "gravity"})).sort(
        pl.col("method") == "gravity")
