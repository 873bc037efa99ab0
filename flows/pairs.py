"""Preference-data flow (GRAVITY section 3.3): interest, value and personality pairs, plus the
training data of the training-based baselines (UserSFT's reviews, PrefAlign's demographic pairs)."""
from __future__ import annotations

from prefect import flow, unmapped

from gravity_core.recipe import Recipe
from tasks.evaluate.prefalign import prefalign_batches, prefalign_for_users, prefalign_users, write_prefalign
from tasks.fanout import settle
from tasks.pairs import build_and_export, catalogue_genres, distinct_genres, personality_items
from tasks.profile_io import load_seeds
from tasks.stage import RunContext, StageResult, client_for, gravity_stage


@flow(name="gravity-pairs")
@gravity_stage("pairs")
def pairs_flow(recipe: Recipe, ctx: RunContext) -> StageResult:
    cfg, layout = recipe.pairs, ctx.layout
    genres = catalogue_genres(layout, recipe.banks)
    distinct = distinct_genres(genres, cfg.embedding_model)
    seeds, _ = load_seeds(recipe.banks, recipe.run.seed)
    result = build_and_export(layout, cfg, distinct, genres, seeds, personality_items(recipe.banks), recipe.run.seed)
    rows = {"pairs": result["rows"], "usersft_examples": result["usersft_rows"]}
    artifacts = {"pairs": layout.pairs, "hf": layout.pairs_hf, "usersft": layout.usersft}
    extra, failures, clients = {}, {}, []
    if "prefalign" in recipe.evaluate.trained:
        users = prefalign_users(layout, recipe.evaluate, recipe.run.seed)
        batches = prefalign_batches(users, recipe.run.users_per_task)
        client = client_for(recipe.llm, "prefalign", ctx)
        made, failures = settle([f"prefalign:{b['label']}" for b in batches],
                                prefalign_for_users.map(batches, unmapped(recipe.evaluate), unmapped(client)))
        extra = write_prefalign(made, users, layout)
        rows["prefalign_pairs"], clients = extra["prefalign_pairs"], [client]
        artifacts |= {"prefalign": layout.prefalign_pairs, "prefalign_hf": layout.prefalign_hf}
    return StageResult(done=f"{result['rows']} preference pairs", what="pairs", total=result["rows"],
                       artifacts=artifacts, rows=rows, failures=failures, clients=clients,
                       notes={"per_facet": result["per_facet"], "per_split": result["per_split"],
                              "per_user": result["per_user"],
                              "ablations": {"drop_facets": cfg.drop_facets, "drop_traits": cfg.drop_traits},
                              "prefalign_dropped": extra.get("prefalign_dropped", {})},
                       value=result)
