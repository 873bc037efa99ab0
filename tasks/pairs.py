"""Prefect tasks of the preference-data stage: genre embeddings, assembly and export."""
from __future__ import annotations

import polars as pl
from prefect import task

from gravity_core.banks import PersonalityItem, SeedStatement
from gravity_core.evaluation.requests import persona_fields
from gravity_core.layout import RunLayout
from gravity_core.pairs.build import build_pairs, counts, profile_prefixes, profile_view, sample_items
from gravity_core.pairs.genres import distinct_frame, genre_texts, least_similar
from gravity_core.profile.assemble import interests_frame, levels_frame
from gravity_core.recipe import BanksConfig
from gravity_core.records import PreferencePair
from gravity_core.stage_configs import PairsConfig
from gravity_core.training.usersft import usersft_messages
from tasks.bank_io import load_genre_taxonomy, load_personality_items
from tasks.caching import code_aware
from tasks.embeddings import embed
from tasks.records_io import read_profiles, write_frame
from tasks.resources import load_phrasing, load_prompt, resolve_path

EXPORT_COLUMNS = ["prompt", "chosen", "rejected", "pair_id", "user_id", "facet", "source_id", "seed_id", "trait",
                  "profile_version", "pool_version", "prompt_version"]


@task(name="catalogue-genres")
def catalogue_genres(layout: RunLayout, banks: BanksConfig) -> list[dict]:
    """The taxonomy genres the ingested catalogue has books for (contrasts need real books):
    genre, name, description."""
    taxonomy = load_genre_taxonomy(resolve_path(banks.genres))
    present = set(pl.read_parquet(layout.books, columns=["genre"])["genre"])
    return [{"genre": g.id, "name": g.name, "description": g.description} for g in taxonomy.genres if g.id in present]


@task(name="genre-similarity-order", cache_policy=code_aware(), persist_result=True)
def distinct_genres(genres: list[dict], model: str) -> dict[str, list[str]]:
    """For every genre, the other genres ordered from least to most similar (sentence embeddings)."""
    frame = pl.DataFrame(genres)
    return least_similar(embed(genre_texts(frame), model), frame["genre"].to_list())


@task(name="load-personality-items")
def personality_items(banks: BanksConfig) -> list[PersonalityItem]:
    return load_personality_items(resolve_path(banks.personality_items))


@task(name="build-preference-pairs", log_prints=False)  # datasets: see tasks/train_stage.py
def build_and_export(layout: RunLayout, cfg: PairsConfig, distinct: dict[str, list[str]], genres: list[dict],
                     seeds: list[SeedStatement], items: list[PersonalityItem], seed: int) -> dict:
    """Assemble every user's pairs; write pairs.parquet and the TRL-ready HF dataset."""
    profiles = read_profiles(layout)
    interests = interests_frame(profiles)
    pool = pl.read_parquet(layout.pool)
    inputs = {"interests": interests.lazy(), "distinct": distinct_frame(interests, distinct, cfg.distinct_genres).lazy(),
              "genres": pl.LazyFrame(genres), "books": pl.scan_parquet(layout.books),
              "reviewed": pl.scan_parquet(layout.reviews).select("user_id", "parent_asin"),
              "stances": pl.scan_parquet(layout.stances).drop("profile_version"),
              "pool": pool.lazy().select("scenario_id", "seed_id", "aligned", "contradicting"),
              "seeds": pl.LazyFrame([{"seed_id": s.id, "statement": s.statement} for s in seeds]),
              "levels": levels_frame(profiles).lazy(),
              "items": sample_items(_items_frame(items), cfg.items_per_trait, seed).lazy()}
    prefixes = profile_prefixes([profile_view(p) for p in profiles], load_prompt("gravity_training"))
    version = pool["pool_version"][0] if pool.height else "pool-empty"
    phrasing = load_phrasing()
    prompt_version = f"gravity_training@{load_prompt('gravity_training').version}+phrasing@{phrasing.version}"
    pairs = build_pairs(cfg, inputs, prefixes, version, seed, phrasing, prompt_version)
    usersft = export_usersft(layout, {p.user_id: persona_fields(p.demographics.model_dump()) for p in profiles})
    return {**export(pairs, layout), **counts(pairs), "usersft_rows": usersft}


def export_usersft(layout: RunLayout, personas: dict[str, dict[str, str]]) -> int:
    """The UserSFT baseline's data (Table 12: persona + description -> the user's own review) as
    RUN_DIR/pairs/usersft."""
    from datasets import Dataset, DatasetDict
    rows = usersft_messages(pl.scan_parquet(layout.reviews), pl.scan_parquet(layout.books), personas,
                            load_prompt("baseline_user_sft_training"))
    DatasetDict({"train": Dataset.from_polars(rows)}).save_to_disk(str(layout.usersft))
    return rows.height


def _items_frame(items: list[PersonalityItem]) -> pl.DataFrame:
    return pl.DataFrame([{"item_id": i.id, "trait": i.trait, "style": i.style, "situation": i.situation,
                          "high_response": i.high_response, "low_response": i.low_response} for i in items])


def export(pairs: pl.DataFrame, layout: RunLayout) -> dict:
    """pairs.parquet (typed `PreferencePair` rows) and an HF DatasetDict (train / eval / heldout) in
    TRL's conversational preference format (prompt, chosen, rejected) plus provenance columns."""
    from datasets import Dataset, DatasetDict
    rows = write_frame(pairs, PreferencePair, layout.pairs)
    trl = pairs.drop("chosen", "rejected").rename({"chosen_msgs": "chosen", "rejected_msgs": "rejected"})
    splits = {name: Dataset.from_polars(trl.filter(pl.col("split") == name).select(EXPORT_COLUMNS))
              for name in ("train", "eval", "heldout")}
    DatasetDict(splits).save_to_disk(str(layout.pairs_hf))
    return {"rows": rows}
