"""The run directory: atomic artifact writes and the manifest (RUN_DIR/manifest.json)."""
from __future__ import annotations

import fcntl
import json
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from gravity_core.manifest import Manifest, StageRecord

MANIFEST = "manifest.json"


@contextmanager
def locked(run_dir: Path, name: str = ".manifest.lock"):
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / name, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_parquet_atomic(frame: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.write_parquet(tmp)
    tmp.replace(path)


def read_manifest(run_dir: Path) -> Manifest | None:
    path = Path(run_dir) / MANIFEST
    return Manifest.model_validate_json(path.read_text()) if path.exists() else None


def record_stage(run_dir: Path, run_id: str, recipe_name: str, recipe_hash: str,
                 stage: str, record: StageRecord) -> Manifest:
    """Add or replace one stage's record (under a lock; other stages are kept)."""
    run_dir = Path(run_dir)
    with locked(run_dir):
        manifest = read_manifest(run_dir) or Manifest(run_id=run_id, recipe_name=recipe_name,
                                                      recipe_hash=recipe_hash)
        manifest = manifest.with_stage(stage, record).model_copy(update={"run_id": run_id})
        write_text_atomic(run_dir / MANIFEST, json.dumps(manifest.model_dump(mode="json"), indent=2))
    return manifest
