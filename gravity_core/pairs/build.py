"""All of one cohort's preference pairs: facets, ablations (paper Table 5), profile conditioning,
splits (train / eval / held-out whole scenarios and items) and counts."""
from __future__ import annotations

import polars as pl

from gravity_core.pairs import assemble
from gravity_core.phrasing import Phrasing
from gravity_core.profile.records import Profile
from gravity_core.prompts import PromptTemplate
from gravity_core.stage_configs import PairsConfig

TASK_SENTINEL = "\u0000TASK\u0000"


def profile_prefixes(profiles: list[dict], template: PromptTemplate) -> pl.DataFrame:
    """Each user's rendered training template around a task slot (rendered once per user).

    Takes: profile dicts (user_id, profile_version, demographics, value_summary, traits).
    Returns: user_id, profile_version, system, head, tail (user turn = head + task + tail)."""
    rows = []
    for p in profiles:
        system, user = template.render(demographics=p["demographics"], value_summary=p["value_summary"],
                                       traits=p["traits"], task=TASK_SENTINEL)
        head, tail = user.content.split(TASK_SENTINEL)
        rows.append({"user_id": p["user_id"], "profile_version": p["profile_version"], "system": system.content,
                     "head": head, "tail": tail})
    return pl.DataFrame(rows, schema={"user_id": pl.String, "profile_version": pl.String, "system": pl.String,
                                      "head": pl.String, "tail": pl.String})


def facet_frames(cfg: PairsConfig, inputs: dict[str, pl.LazyFrame], phrasing: Phrasing) -> list[pl.LazyFrame]:
    """The facet builders the recipe keeps (ablation switches drop facets or single traits)."""
    drop = set(cfg.drop_facets)
    frames = []
    if "interest-category" not in drop:
        frames.append(assemble.category_pairs(inputs["interests"], inputs["distinct"], inputs["genres"], phrasing))
    if "interest-summary" not in drop:
        frames.append(assemble.summary_pairs(inputs["interests"], inputs["distinct"], inputs["books"],
                                             inputs["reviewed"], cfg.summary_books_per_genre, cfg.min_book_rating,
                                             phrasing))
    if "value" not in drop:
        frames.append(assemble.value_pairs(inputs["stances"], inputs["pool"], inputs["seeds"], phrasing))
    if "personality" not in drop:
        levels = inputs["levels"].filter(~pl.col("trait").is_in(list(cfg.drop_traits)))
        frames.append(assemble.personality_pairs(levels, inputs["items"], phrasing))
    return frames


def _fraction(col: str, seed: int) -> pl.Expr:
    return (pl.col(col).hash(seed) % 10_000).cast(pl.Float64) / 10_000


def assign_splits(pairs: pl.LazyFrame, cfg: PairsConfig, seed: int) -> pl.LazyFrame:
    """held-out: every example of a held-out scenario or item (whole situations no training
    example uses); eval: a share of the rest by pair id; train: the remainder. Adds `split`."""
    heldout = pl.col("heldout_key").is_not_null() & (_fraction("heldout_key", seed) < cfg.heldout_fraction)
    return pairs.with_columns(pl.when(heldout).then(pl.lit("heldout"))
                              .when(_fraction("pair_id", seed + 1) < cfg.eval_fraction).then(pl.lit("eval"))
                              .otherwise(pl.lit("train")).alias("split"))


def build_pairs(cfg: PairsConfig, inputs: dict[str, pl.LazyFrame], prefixes: pl.DataFrame, pool_version: str,
                seed: int, phrasing: Phrasing, prompt_version: str) -> pl.DataFrame:
    """Returns: PAIR_COLUMNS + profile_version, pool_version, prompt_text, split, prompt, chosen_msgs,
    rejected_msgs — one row per preference pair, deduplicated by pair_id."""
    frames = facet_frames(cfg, inputs, phrasing)
    if not frames:
        raise ValueError("every facet is ablated: no preference pairs to build")
    pairs = pl.concat(frames, how="vertical").unique("pair_id", keep="first", maintain_order=True)
    pairs = assemble.condition_on_profile(pairs, prefixes.lazy()).with_columns(
        pl.lit(pool_version).alias("pool_version"), pl.lit(prompt_version).alias("prompt_version"))
    return assemble.to_trl(assign_splits(pairs, cfg, seed)).sort("pair_id").collect()


def counts(pairs: pl.DataFrame) -> dict[str, object]:
    """Pairs per facet, per split, and per user x facet (for the manifest)."""
    per_user = pairs.group_by("user_id", "facet").len().sort("user_id", "facet")
    return {"per_facet": dict(pairs.group_by("facet").len().sort("facet").iter_rows()),
            "per_split": dict(pairs.group_by("split").len().sort("split").iter_rows()),
            "per_user": {u: dict(zip(f.get_column("facet"), f.get_column("len")))
                         for (u,), f in per_user.group_by("user_id", maintain_order=True)}}


def sample_items(items: pl.DataFrame, per_trait: int, seed: int) -> pl.DataFrame:
    """Per trait, `per_trait` items, half from each style where the bank allows (seeded).

    Takes and returns: item_id, trait, style, situation, high_response, low_response."""
    ranked = items.with_columns(pl.col("item_id").hash(seed).alias("_r")).sort("trait", "style", "_r")
    half = ranked.with_columns(pl.int_range(pl.len()).over("trait", "style").alias("_k"))
    picked = half.sort("trait", "_k", "style").group_by("trait", maintain_order=True).head(per_trait)
    return picked.drop("_r", "_k").sort("trait", "item_id")


def profile_view(profile: Profile) -> dict:
    """The fields of a profile the training template shows (paper Table 12), plus the user summary
    (UserSummary / TriAgent baselines, the judge's persona)."""
    traits = ", ".join(f"{level} {trait}" for trait, level in profile.personality.levels.items())
    return {"user_id": profile.user_id, "profile_version": profile.profile_version,
            "demographics": profile.demographics.describe(), "value_summary": profile.values.summary,
            "traits": traits, "user_summary": profile.user_summary}

