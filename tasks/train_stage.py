"""Prefect tasks wrapping training and held-out evaluation (cached: a re-run never retrains;
the key covers the training data's content, the config and the code that trains).

Tasks that touch Hugging Face `datasets` run with `log_prints=False`: `datasets` fingerprints
functions with dill, which reads their globals from `dis.dis` output captured on stdout; under the
flows' `log_prints=True` Prefect's print patch sent that disassembly to the run log instead (pages
of bytecode in run.log) and dill saw no globals."""
from __future__ import annotations

import hashlib
from pathlib import Path

from prefect import task

from gravity_core.banks import SeedStatement
from gravity_core.layout import RunLayout
from gravity_core.records import PreferencePair
from tasks.caching import code_aware
from tasks.records_io import read_frame


@task(task_run_name="training-data-{method}", log_prints=False)
def fingerprint(layout: RunLayout, method: str) -> dict:
    """Content hash of the data `method` trains on (the training cache key) and, for GRAVITY's
    pairs, the pairs per facet (for the model card)."""
    data = layout.training_data(method)
    digest = hashlib.sha256()
    # what save_to_disk wrote; not the cache-*.arrow files that tokenizing (datasets.map) adds beside it
    for part in sorted(p for p in data.rglob("*") if p.is_file() and not p.name.startswith("cache-")):
        digest.update(part.relative_to(data).as_posix().encode())
        digest.update(part.read_bytes())
    facets = {}
    if data == layout.pairs_hf:
        facets = dict(read_frame(layout.pairs, PreferencePair).group_by("facet").len().sort("facet").iter_rows())
    return {"sha": digest.hexdigest()[:16], "facets": facets}


@task(task_run_name="train-{method}", cache_policy=code_aware("run_id", "resume"), persist_result=True,
      log_prints=False)
def train(train_cfg: dict, layout: RunLayout, method: str, cache_dir: str, data_sha: str, facets: dict,
          resume: bool, run_id: str) -> dict:
    """DPO (or SFT) on the run's data into RUN_DIR/train/<method>."""
    from tasks.training import train_adapter
    return train_adapter(train_cfg, layout, method, Path(cache_dir), resume=resume, run_id=run_id, facets=facets)


@task(task_run_name="heldout-eval-{method}", cache_policy=code_aware(), persist_result=True, log_prints=False)
def heldout(train_cfg: dict, layout: RunLayout, method: str, seeds: list[SeedStatement], cache_dir: str,
            adapter_sha: str) -> dict:
    """Held-out pairs scored under the adapter and the base (RUN_DIR/train/<method>/heldout_eval.json)."""
    from tasks.heldout_eval import evaluate_heldout
    return evaluate_heldout(layout, method, train_cfg, {s.id: s.statement for s in seeds}, Path(cache_dir))


def adapter_sha(summary: dict) -> str:
    """Content hash of a trained adapter (keys the held-out evaluation and generation)."""
    digest = hashlib.sha256()
    for part in sorted(Path(summary["adapter"]).glob("adapter_*")):
        digest.update(part.read_bytes())
    return digest.hexdigest()[:16]
