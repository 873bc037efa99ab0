"""Read the knowledge banks (bundled package data or local files) into typed records."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import polars as pl

from gravity_core import bank_releases, banks
from gravity_core.banks import GenreTaxonomy, PersonalityItem, Reject, SeedStatement

BANK_FILES = {
    "seed_statements": "seed_statements.jsonl",
    "personality_items": "personality_items.jsonl",
    "genres": "genres.yaml",
}
RELEASE_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv")


def read_bank_text(name: str, path: Path | None = None) -> str:
    """Text of a bank: `path` when given, else the bundled gravity_core/data/banks file."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"bank file not found: {path}")
        return path.read_text(encoding="utf-8")
    bundled = resources.files("gravity_core").joinpath("data", "banks", BANK_FILES[name])
    if not bundled.is_file():
        raise FileNotFoundError(f"bundled bank not found: gravity_core/data/banks/{BANK_FILES[name]}")
    return bundled.read_text(encoding="utf-8")


def load_seed_statements(path: Path | None = None) -> list[SeedStatement]:
    """Seed statements (bundled unless `path`)."""
    return banks.parse_seed_statements(read_bank_text("seed_statements", path))


def load_personality_items(path: Path | None = None) -> list[PersonalityItem]:
    """Personality items (bundled unless `path`)."""
    return banks.parse_personality_items(read_bank_text("personality_items", path))


def load_genre_taxonomy(path: Path | None = None) -> GenreTaxonomy:
    """Genre taxonomy (bundled unless `path`)."""
    return banks.parse_genre_taxonomy(read_bank_text("genres", path))


def load_bank_version(name: str, path: Path | None = None) -> str:
    """Content hash of a bank, to record in downstream artifacts."""
    return banks.bank_version(read_bank_text(name, path))


def _release_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in RELEASE_SUFFIXES)
    if not path.is_file():
        raise FileNotFoundError(f"release file not found: {path}")
    return [path]


def _json_rows(path: Path) -> Iterator[dict]:
    data = json.loads(path.read_text(encoding="utf-8-sig"))
    if isinstance(data, dict):  # {"split": [rows], ...} or {"data": [rows]}
        data = [row for rows in data.values() if isinstance(rows, list) for row in rows]
    yield from data


def read_release_rows(path: Path) -> Iterator[dict]:
    """Rows of a local release: a .json/.jsonl/.parquet/.csv file or a folder of them."""
    for file in _release_files(Path(path)):
        if file.suffix == ".parquet":
            yield from pl.read_parquet(file).iter_rows(named=True)
        elif file.suffix == ".csv":
            with file.open(encoding="utf-8-sig", newline="") as handle:
                yield from csv.DictReader(handle)
        elif file.suffix == ".jsonl":
            with file.open(encoding="utf-8-sig") as handle:
                yield from (json.loads(line) for line in handle if line.strip())
        else:
            yield from _json_rows(file)


def load_trait_release(path: Path) -> tuple[list[PersonalityItem], list[Reject]]:
    """TRAIT release (local files) -> scenario items and rejected rows."""
    return bank_releases.trait_rows_to_items(read_release_rows(path))


def load_big5chat_release(path: Path) -> tuple[list[PersonalityItem], list[Reject]]:
    """Big5Chat release (local files, e.g. big5_chat_dataset.csv) -> dialogue items and rejects."""
    return bank_releases.big5chat_rows_to_items(read_release_rows(path))
