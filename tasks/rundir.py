"""The run directory's files: atomic writes, a file lock, the manifest (RUN_DIR/manifest.json)."""
from __future__ import annotations

import fcntl
import json
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from gravity_core.layout import RunLayout
from gravity_core.manifest import Manifest, StageRecord


@contextmanager
def file_lock(path: Path):
    """An exclusive advisory lock on `path` (created if missing) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tmp(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(path.name + ".tmp")


def write_text_atomic(path: Path, text: str) -> None:
    tmp = _tmp(Path(path))
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_parquet_atomic(frame: pl.DataFrame, path: Path) -> None:
    tmp = _tmp(Path(path))
    frame.write_parquet(tmp)
    tmp.replace(path)


def read_manifest(layout: RunLayout) -> Manifest | None:
    path = layout.manifest
    return Manifest.model_validate_json(path.read_text()) if path.exists() else None


def record_stage(layout: RunLayout, run_id: str, recipe_name: str, recipe_hash: str,
                 stage: str, record: StageRecord) -> Manifest:
    """Add or replace one stage's record (under a lock; other stages are kept)."""
    with file_lock(layout.manifest_lock):
        manifest = read_manifest(layout) or Manifest(run_id=run_id, recipe_name=recipe_name, recipe_hash=recipe_hash)
        manifest = manifest.with_stage(stage, record).model_copy(update={"run_id": run_id})
        write_text_atomic(layout.manifest, json.dumps(manifest.model_dump(mode="json"), indent=2))
    return manifest
