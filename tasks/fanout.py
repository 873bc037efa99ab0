"""Collecting per-user fan-out results without letting one failure sink the rest."""
from __future__ import annotations

from typing import Any


def settle(keys: list[str], futures: list) -> tuple[dict[str, Any], dict[str, str]]:
    """Wait for mapped futures; (results by key, failure reason by key)."""
    results, failures = {}, {}
    for key, future in zip(keys, futures):
        future.wait()
        state = future.state
        if state.is_completed():
            results[key] = future.result()
        else:
            failures[key] = _reason(state)
    return results, failures


def settle_all(keys: list[str], futures: dict[str, list]) -> tuple[dict[str, dict], dict[str, str]]:
    """`settle` for several mapped facets: ({facet: results by key}, first failure reason by key)."""
    results, failures = {}, {}
    for facet, facet_futures in futures.items():
        results[facet], failed = settle(keys, facet_futures)
        for key, reason in failed.items():
            failures.setdefault(key, f"{facet}: {reason}")
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
