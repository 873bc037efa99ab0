"""Reading and writing the typed records of `gravity_core.records` and profiles (schema checked)."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from gravity_core.layout import RunLayout
from gravity_core.profile.records import PROFILE_SCHEMA_VERSION, Profile
from gravity_core.records import Record, RecordSchemaError, check_frame, records_frame, with_schema_version
from tasks.rundir import write_parquet_atomic, write_text_atomic


def write_frame(frame: pl.DataFrame, cls: type[Record], path: Path) -> int:
    """A stage's frame, stamped and cast to `cls`'s schema, written atomically. Returns rows."""
    stamped = with_schema_version(frame, cls)
    write_parquet_atomic(stamped, Path(path))
    return stamped.height


def write_records(records: list[Record], cls: type[Record], path: Path) -> int:
    """Records of one class as parquet with the class's explicit schema. Returns rows."""
    write_parquet_atomic(records_frame(records, cls), Path(path))
    return len(records)


def read_frame(path: Path, cls: type[Record]) -> pl.DataFrame:
    """A record file as a frame, after checking its schema version and columns."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the stage that writes it first")
    return check_frame(pl.read_parquet(path), cls, str(path))


def read_records(path: Path, cls: type[Record]) -> list[Record]:
    """A (small) record file as typed records."""
    return [cls.model_validate(row) for row in read_frame(path, cls).iter_rows(named=True)]


def write_profile(layout: RunLayout, profile: Profile) -> None:
    payload = {**profile.model_dump(mode="json"), "profile_version": profile.profile_version}
    write_text_atomic(layout.profile_json(profile.user_id), json.dumps(payload, indent=2))


def read_profiles(layout: RunLayout) -> list[Profile]:
    """Every profile of a run (RUN_DIR/profiles/users/*.json) as typed records, by user id."""
    files = sorted(layout.profile_users.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no profiles under {layout.profile_users}: run the profiles stage first")
    return [_profile(p) for p in files]


def _profile(path: Path) -> Profile:
    raw = json.loads(path.read_text(encoding="utf-8"))
    version = raw.get("schema_version")
    if version != PROFILE_SCHEMA_VERSION:
        raise RecordSchemaError(f"{path}: profile schema version {version!r}, this GRAVITY reads "
                                f"{PROFILE_SCHEMA_VERSION!r}; re-run the profiles stage")
    raw.pop("profile_version", None)
    return Profile.model_validate(raw)
