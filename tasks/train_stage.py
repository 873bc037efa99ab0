"""Prefect tasks wrapping training and held-out evaluation (cached: a re-run never retrains)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE


@task(name="pairs-fingerprint")
def fingerprint(run_dir: str) -> dict:
    """Content hash of the exported pairs (the training cache key) and the pairs per facet."""
    path = Path(run_dir) / "pairs" / "pairs.parquet"
    manifest = json.loads((Path(run_dir) / "manifest.json").read_text())
    facets = {k.split(":", 1)[1]: v for k, v in manifest["stages"]["pairs"]["rows"].items() if k.startswith("facet:")}
    return {"sha": hashlib.sha256(path.read_bytes()).hexdigest()[:16], "facets": facets}


@task(name="train-adapter", cache_policy=(INPUTS - "run_id") + TASK_SOURCE, persist_result=True)
def train(train_cfg: dict, run_dir: str, cache_dir: str, pairs_sha: str, facets: dict, resume: bool, run_id: str) -> dict:
    """DPO (or SFT) on the run's pairs; keyed on the pairs' content, the config and the code."""
    from tasks.training import train_adapter
    run = Path(run_dir)
    return train_adapter(train_cfg, run / "pairs" / "hf", run / "train", Path(cache_dir), resume=resume,
                         run_id=run_id, facets=facets)


@task(name="heldout-eval", cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def heldout(train_cfg: dict, run_dir: str, adapter: str, cache_dir: str, pairs_sha: str) -> dict:
    """Held-out pairs scored under the adapter and the base (RUN_DIR/train/heldout_eval.json)."""
    from tasks.heldout_eval import evaluate_heldout
    return evaluate_heldout(Path(run_dir), train_cfg, Path(adapter), Path(cache_dir))
