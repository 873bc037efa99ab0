"""The banks a recipe points at, loaded and counted (`gravity banks`)."""
from __future__ import annotations

from gravity_core.banks import bank_summary
from gravity_core.recipe import BanksConfig
from tasks.bank_io import (
    load_big5chat_release, load_genre_taxonomy, load_personality_items, load_seed_statements, load_trait_release,
)
from tasks.resources import resolve_path


def load_bank_summary(cfg: BanksConfig) -> dict:
    """Counts of the configured banks, local TRAIT/Big5Chat releases included when set."""
    items = load_personality_items(resolve_path(cfg.personality_items))
    rejects = 0
    for path, loader in ((cfg.trait_release, load_trait_release), (cfg.big5chat_release, load_big5chat_release)):
        if path:
            extra, rejected = loader(resolve_path(path))
            items, rejects = items + extra, rejects + len(rejected)
    summary = bank_summary(load_seed_statements(resolve_path(cfg.seed_statements)), items,
                           load_genre_taxonomy(resolve_path(cfg.genres)))
    return {**summary, "release_rows_rejected": rejects}
