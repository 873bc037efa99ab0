"""Preference-data flow (GRAVITY section 3.3): interest, value and personality pairs."""
from __future__ import annotations

from prefect import flow

from gravity_core.recipe import Recipe
from tasks.pairs import build_and_export, catalogue_genres, distinct_genres, personality_items
from tasks.profile_io import load_seeds
from tasks.stage import RunContext, StageResult, gravity_stage


@flow(name="gravity-pairs")
@gravity_stage("pairs")
def pairs_flow(recipe: Recipe, ctx: RunContext) -> StageResult:
    cfg, layout = recipe.pairs, ctx.layout
    genres = catalogue_genres(layout, recipe.banks)
    distinct = distinct_genres(genres, cfg.embedding_model)
    seeds, _ = load_seeds(recipe.banks, recipe.run.seed)
    result = build_and_export(layout, cfg, distinct, genres, seeds, personality_items(recipe.banks), recipe.run.seed)
    return StageResult(done=f"{result['rows']} preference pairs", what="pairs", total=result["rows"],
                       artifacts={"pairs": layout.pairs, "hf": layout.pairs_hf, "usersft": layout.usersft},
                       rows={"pairs": result["rows"], "usersft_examples": result["usersft_rows"]},
                       notes={"per_facet": result["per_facet"], "per_split": result["per_split"],
                              "per_user": result["per_user"],
                              "ablations": {"drop_facets": cfg.drop_facets, "drop_traits": cfg.drop_traits}},
                       value=result)
