"""Preference-data flow (GRAVITY section 3.3): interest, value and personality pairs."""
from __future__ import annotations

import time

from prefect import flow

from gravity_core.recipe import Recipe
from tasks.bank_io import load_personality_items
from tasks.pairs import build_and_export, catalogue_genres, distinct_genres
from tasks.profile_io import load_seeds
from tasks.resources import resolve_path
from tasks.stage import RunContext, finish_stage


@flow(name="gravity-pairs")
def pairs_flow(recipe: Recipe, ctx: RunContext) -> dict:
    started = time.time()
    cfg = recipe.pairs
    genres = catalogue_genres(ctx.run_dir, recipe.banks)
    distinct = distinct_genres(genres, cfg.embedding_model)
    seeds, _ = load_seeds(recipe.banks, recipe.run.seed)
    items = load_personality_items(resolve_path(recipe.banks.personality_items))
    result = build_and_export(ctx.run_dir, cfg, distinct, genres, seeds, items, recipe.run.seed)
    finish_stage(ctx, "pairs", started, artifacts={**result["paths"], "usersft": f"{ctx.run_dir}/pairs/usersft"},
                 rows={"pairs": result["rows"], "usersft_examples": result["usersft_rows"], **{f"facet:{k}": v for k, v in result["per_facet"].items()},
                       **{f"split:{k}": v for k, v in result["per_split"].items()}},
                 notes={"per_user": result["per_user"], "ablations": {"drop_facets": cfg.drop_facets,
                                                                       "drop_traits": cfg.drop_traits}})
    return result
