"""Scenario pool (GRAVITY section 3.3, appendix B): per seed statement, N pairs of short
role-playing scenarios, one illustrating the statement and one contradicting it."""
from __future__ import annotations

import hashlib
import json
import re

import polars as pl

from gravity_core.profile.facets import extract_json_object

SCENARIO_POOL_SCHEMA = {"scenario_id": pl.String, "seed_id": pl.String, "pair_index": pl.Int64,
                        "aligned": pl.String, "contradicting": pl.String, "pool_version": pl.String,
                        "model": pl.String, "prompt_version": pl.String}


def scenario_schema(n_pairs: int, max_chars: int = 400) -> dict:
    """JSON schema of one seed's reply: exactly `n_pairs` pairs of non-empty strings."""
    text = {"type": "string", "minLength": 1, "maxLength": max_chars}
    pair = {"type": "object", "properties": {"aligned": text, "contradicting": text},
            "required": ["aligned", "contradicting"], "additionalProperties": False}
    return {"type": "object", "properties": {"pairs": {"type": "array", "items": pair, "minItems": n_pairs,
                                                       "maxItems": n_pairs}},
            "required": ["pairs"], "additionalProperties": False}


def _norm(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def parse_scenarios(text: str, n_pairs: int) -> list[dict[str, str]]:
    """Reply -> `n_pairs` validated pairs: both sides present, non-empty, distinct, no repeats."""
    pairs = extract_json_object(text).get("pairs")
    if not isinstance(pairs, list) or len(pairs) != n_pairs:
        raise ValueError(f"'pairs' must be a list of exactly {n_pairs} objects")
    seen: set[str] = set()
    result = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, dict):
            raise ValueError(f"pair {i} is not an object")
        aligned, contra = (" ".join(str(pair.get(k) or "").split()) for k in ("aligned", "contradicting"))
        if not aligned or not contra:
            raise ValueError(f"pair {i}: both 'aligned' and 'contradicting' must be non-empty")
        if _norm(aligned) == _norm(contra):
            raise ValueError(f"pair {i}: the aligned and contradicting scenarios are the same text")
        if _norm(aligned) in seen or _norm(contra) in seen:
            raise ValueError(f"pair {i} repeats a scenario of another pair")
        seen |= {_norm(aligned), _norm(contra)}
        result.append({"aligned": aligned, "contradicting": contra})
    return result


def pool_version(seed_ids: list[str], n_pairs: int, model_key: str, bank_version: str) -> str:
    """Identifies a pool: which seeds, how many pairs, which model and prompt, which bank."""
    blob = json.dumps([sorted(seed_ids), n_pairs, model_key, bank_version])
    return "pool-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def pool_frame(by_seed: dict[str, list[dict[str, str]]], version: str, model: str, prompt_version: str) -> pl.DataFrame:
    """Returns: scenario_id, seed_id, pair_index, aligned, contradicting, pool_version, model, prompt_version.
    Pairs repeated across seeds are dropped (first seed in id order keeps them)."""
    rows, seen = [], set()
    for seed_id in sorted(by_seed):
        for i, pair in enumerate(by_seed[seed_id]):
            key = (_norm(pair["aligned"]), _norm(pair["contradicting"]))
            if key in seen:
                continue
            seen.add(key)
            rows.append({"scenario_id": f"{seed_id}#{i}", "seed_id": seed_id, "pair_index": i, **pair,
                         "pool_version": version, "model": model, "prompt_version": prompt_version})
    return pl.DataFrame(rows, schema=SCENARIO_POOL_SCHEMA)
