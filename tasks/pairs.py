"""Prefect tasks of the preference-data stage: genre embeddings, assembly and export."""
from __future__ import annotations

from pathlib import Path

import polars as pl
from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from gravity_core.banks import PersonalityItem, SeedStatement
from gravity_core.pairs.build import build_pairs, counts, profile_prefixes, profile_view, sample_items
from gravity_core.pairs.genres import distinct_frame, genre_texts, least_similar
from gravity_core.stage_configs import PairsConfig
from gravity_core.training.usersft import usersft_messages
from gravity_core.recipe import BanksConfig
from tasks.bank_io import load_genre_taxonomy
from gravity_core.profile.assemble import interests_frame, levels_frame
from tasks.embeddings import embed
from tasks.profile_io import read_profiles
from tasks.resources import load_phrasing, load_prompt, resolve_path
from tasks.rundir import write_parquet_atomic

EXPORT_COLUMNS = ["prompt", "chosen", "rejected", "pair_id", "user_id", "facet", "source_id",
                  "profile_version", "pool_version", "prompt_version"]


@task(name="catalogue-genres")
def catalogue_genres(run_dir: str, banks: BanksConfig) -> list[dict]:
    """The taxonomy genres the ingested catalogue has books for (contrasts need real books):
    genre, name, description."""
    taxonomy = load_genre_taxonomy(resolve_path(banks.genres))
    present = set(pl.read_parquet(Path(run_dir) / "ingest" / "books.parquet", columns=["genre"])["genre"])
    return [{"genre": g.id, "name": g.name, "description": g.description} for g in taxonomy.genres if g.id in present]


@task(name="genre-similarity-order", cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def distinct_genres(genres: list[dict], model: str) -> dict[str, list[str]]:
    """For every genre, the other genres ordered from least to most similar (sentence embeddings)."""
    frame = pl.DataFrame(genres)
    return least_similar(embed(genre_texts(frame), model), frame["genre"].to_list())


@task(name="build-preference-pairs")
def build_and_export(run_dir: str, cfg: PairsConfig, distinct: dict[str, list[str]], genres: list[dict],
                     seeds: list[SeedStatement], items: list[PersonalityItem], seed: int) -> dict:
    """Assemble every user's pairs; write pairs.parquet and the TRL-ready HF dataset."""
    run = Path(run_dir)
    profiles = read_profiles(run)
    interests, levels = interests_frame(profiles), levels_frame(profiles)
    pool = pl.read_parquet(run / "scenarios" / "pool.parquet")
    reviews = pl.scan_parquet(run / "ingest" / "reviews.parquet").select("user_id", "parent_asin")
    inputs = {"interests": interests.lazy(), "distinct": distinct_frame(interests, distinct, cfg.distinct_genres).lazy(),
              "genres": pl.LazyFrame(genres), "books": pl.scan_parquet(run / "ingest" / "books.parquet"),
              "reviewed": reviews, "stances": pl.scan_parquet(run / "profiles" / "stances.parquet").drop("profile_version"),
              "pool": pool.lazy().select("scenario_id", "seed_id", "aligned", "contradicting"),
              "seeds": pl.LazyFrame([{"seed_id": s.id, "statement": s.statement} for s in seeds]),
              "levels": levels.lazy(), "items": sample_items(_items_frame(items), cfg.items_per_trait, seed).lazy()}
    prefixes = profile_prefixes([profile_view(p) for p in profiles], load_prompt("gravity_training"))
    version = pool["pool_version"][0] if pool.height else "pool-empty"
    phrasing = load_phrasing()
    prompt_version = f"gravity_training@{load_prompt('gravity_training').version}+phrasing@{phrasing.version}"
    pairs = build_pairs(cfg, inputs, prefixes, version, seed, phrasing, prompt_version)
    usersft = export_usersft(run, [p["user_id"] for p in profiles])
    return {**export(pairs, run / "pairs"), **counts(pairs), "usersft_rows": usersft}


def export_usersft(run: Path, users: list[str]) -> int:
    """The UserSFT baseline's data (description -> the user's own review) as RUN_DIR/pairs/usersft."""
    from datasets import Dataset, DatasetDict
    rows = usersft_messages(pl.scan_parquet(run / "ingest" / "reviews.parquet"),
                            pl.scan_parquet(run / "ingest" / "books.parquet"), users, load_phrasing().usersft_task)
    DatasetDict({"train": Dataset.from_polars(rows)}).save_to_disk(str(run / "pairs" / "usersft"))
    return rows.height


def _items_frame(items: list[PersonalityItem]) -> pl.DataFrame:
    return pl.DataFrame([{"item_id": i.id, "trait": i.trait, "style": i.style, "situation": i.situation,
                          "high_response": i.high_response, "low_response": i.low_response} for i in items])


def export(pairs: pl.DataFrame, out: Path) -> dict:
    """pairs.parquet (every column) and an HF DatasetDict (train / eval / heldout) in TRL's
    conversational preference format (prompt, chosen, rejected) plus provenance columns."""
    from datasets import Dataset, DatasetDict
    write_parquet_atomic(pairs, out / "pairs.parquet")
    trl = pairs.drop("chosen", "rejected").rename({"chosen_msgs": "chosen", "rejected_msgs": "rejected"})
    splits = {name: Dataset.from_polars(trl.filter(pl.col("split") == name).select(EXPORT_COLUMNS))
              for name in ("train", "eval", "heldout")}
    DatasetDict(splits).save_to_disk(str(out / "hf"))
    return {"rows": pairs.height, "paths": {"pairs": str(out / "pairs.parquet"), "hf": str(out / "hf")}}
