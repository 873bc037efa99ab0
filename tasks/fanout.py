"""Collecting per-item fan-out results without letting one failure sink the rest."""
from __future__ import annotations

from typing import Any

from prefect.futures import as_completed

from tasks.progress import BOARD


def settle(keys: list[str], futures: list, stage: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Wait for mapped futures as they finish; (results by key, failure reason by key).
    Each finished item advances `stage`'s progress."""
    BOARD.expect(stage, len(keys))
    by_future = {id(f): k for k, f in zip(keys, futures)}
    results, failures = {}, {}
    for future in as_completed(futures):
        future.wait()
        key, state = by_future[id(future)], future.state
        if state.is_completed():
            results[key] = future.result()
        else:
            failures[key] = _reason(state)
        BOARD.advance(stage, key, failures.get(key))
    return {k: results[k] for k in keys if k in results}, {k: failures[k] for k in keys if k in failures}


def settle_all(keys: list[str], futures: dict[str, list], stage: str | None = None) -> tuple[dict[str, dict], dict[str, str]]:
    """`settle` for several mapped facets: ({facet: results by key}, first failure reason by key)."""
    BOARD.expect(stage, len(keys))
    results, failures = {}, {}
    for facet, facet_futures in futures.items():
        results[facet], failed = settle(keys, facet_futures)
        for key, reason in failed.items():
            failures.setdefault(key, f"{facet}: {reason}")
    for key in keys:
        BOARD.advance(stage, key, failures.get(key))
    return results, failures


def _reason(state) -> str:
    try:
        state.result(raise_on_failure=True)
    except Exception as exc:  # the task's own exception: its message is the reason
        return f"{type(exc).__name__}: {exc}"[:500]
    return state.message or state.name


def survivors(users: list, results: dict[str, Any]) -> tuple[list, list[str], list]:
    """The users an earlier facet succeeded for: (users, their ids, that facet's results)."""
    kept = [u for u in users if u.user_id in results]
    ids = [u.user_id for u in kept]
    return kept, ids, [results[i] for i in ids]


def settle_batches(batch_keys: list[list[str]], futures: list, stage: str | None = None
                   ) -> tuple[dict[str, dict], dict[str, str]]:
    """`settle_all` for batched task runs (each returns {"facets": {facet: {key: value}},
    "failures": {key: reason}}), given each batch's keys: the same ({facet: results by key},
    failure reason by key). A batch that fails as a whole fails each of its keys with its reason."""
    keys = [k for batch in batch_keys for k in batch]
    BOARD.expect(stage, len(keys))
    members = {id(f): batch for f, batch in zip(futures, batch_keys)}
    results: dict[str, dict] = {}
    failures: dict[str, str] = {}
    for future in as_completed(futures):
        future.wait()
        if future.state.is_completed():
            done = future.result()
            for facet, values in done["facets"].items():
                results.setdefault(facet, {}).update(values)
            failures.update(done["failures"])
        else:
            failures.update(dict.fromkeys(members[id(future)], _reason(future.state)))
        for key in members[id(future)]:
            BOARD.advance(stage, key, failures.get(key))
    return ({facet: {k: v[k] for k in keys if k in v} for facet, v in results.items()},
            {k: failures[k] for k in keys if k in failures})


def batched(items: list, ids: list[str], size: int) -> list[dict]:
    """Consecutive batches of `size` items for one task run each: {"label" (for the task run
    name: the first id, and how many more), "ids", "items"}."""
    out = []
    for i in range(0, len(items), size):
        chunk = ids[i:i + size]
        out.append({"label": chunk[0] if len(chunk) == 1 else f"{chunk[0]}+{len(chunk) - 1}", "ids": chunk,
                    "items": items[i:i + size]})
    return out


def batch_ids(batches: list[dict]) -> list[list[str]]:
    return [b["ids"] for b in batches]
