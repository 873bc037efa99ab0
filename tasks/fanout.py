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


def _reason(state) -> str:
    try:
        state.result(raise_on_failure=True)
    except Exception as exc:  # the task's own exception: its message is the reason
        return f"{type(exc).__name__}: {exc}"[:500]
    return state.message or state.name


def pick(items: list, keys: list[str], allowed) -> list:
    """The items whose key is in `allowed` (users that survived an earlier facet)."""
    return [item for item, key in zip(items, keys) if key in allowed]
