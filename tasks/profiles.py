"""Prefect tasks of the profile stage: one task run per user per facet (GRAVITY 3.2).

Each task renders a bundled prompt, calls the injected `ModelClient` and parses with the
pure functions of `gravity_core.profile.facets`. The client is excluded from the cache key;
`model_key` (backend, model, adapter, prompt versions) stands in for it.
"""
from __future__ import annotations

import hashlib
import json
from functools import partial

from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from gravity_core.banks import SeedStatement
from gravity_core.llm import SamplingParams
from gravity_core.profile import facets
from gravity_core.profile.config import ProfilesConfig
from gravity_core.profile.records import (
    AGE_BINS, GENDERS, Demographics, Interests, Personality, UserInput, Values, age_bin,
)
from tasks.classifiers import hf_classify_levels, hf_classify_label
from tasks.llm.client import ModelClient
from tasks.resources import load_prompt, prompt_versions

PROFILE_PROMPTS = ("profile_values", "profile_value_summary", "profile_user_summary",
                   "profile_personality", "profile_demographics")
USER_CACHE = (INPUTS - "client") + TASK_SOURCE
TASK_OPTS = dict(cache_policy=USER_CACHE, persist_result=True, retries=1, retry_delay_seconds=2)


def provenance_models(client: ModelClient) -> dict[str, str]:
    identity = client.backend.identity
    return {"llm": f"{identity.backend}/{identity.model}" + (f"+{identity.adapter}" if identity.adapter else "")}


def model_key(client: ModelClient) -> str:
    """What the cached results depend on besides the inputs: backend identity + prompt versions."""
    prompts = prompt_versions(PROFILE_PROMPTS)
    blob = json.dumps([client.backend.identity.model_dump(), prompts], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def describe(demo: Demographics) -> str:
    return "; ".join(f"{k}: {v}" for k, v in (("country", demo.country), ("age", demo.age_bin),
                                              ("gender", demo.gender)) if v) or "unknown"


def _flush(client: ModelClient) -> None:
    client.ledger.flush()


@task(task_run_name="demographics-{user.user_id}", **TASK_OPTS)
def infer_demographics(user: UserInput, cfg: ProfilesConfig, model_key: str, client: ModelClient) -> Demographics:
    """Given attributes win; a missing age bin / gender is inferred (LLM or HF classifier)."""
    sources = {"age": "given" if user.age is not None else "unknown",
               "gender": "given" if user.gender else "unknown"}
    values = {"age_bin": age_bin(user.age) if user.age is not None else None, "gender": user.gender}
    text, _ = facets.fit_reviews(user.reviews, cfg)
    for field, attr, conf, allowed in (("age_bin", "age", cfg.age, AGE_BINS), ("gender", "gender", cfg.gender, GENDERS)):
        if values[field] is None and conf.backend == "hf":
            values[field] = hf_classify_label(conf, text, allowed)
            sources[attr] = "inferred:hf"
    missing = [f for f in ("age_bin", "gender") if values[f] is None]
    if missing:
        request = load_prompt("profile_demographics").request(
            SamplingParams(max_tokens=16), facets.demographics_schema(missing), reviews=text, fields=missing)
        try:
            values.update(client.structured(request, partial(facets.parse_demographics, fields=missing),
                                            stage="profiles.demographics", user_id=user.user_id))
        finally:
            _flush(client)
        sources.update({("age" if f == "age_bin" else f): "inferred:llm" for f in missing})
    return Demographics(user_id=user.user_id, country=user.country, age=user.age,
                        age_bin=values["age_bin"], gender=values["gender"], sources=sources)


@task(task_run_name="interests-{user.user_id}", **TASK_OPTS)
def infer_interests(user: UserInput, cfg: ProfilesConfig) -> Interests:
    """Genres covering >= threshold of the user's reviews (no model call)."""
    return facets.interests(user, cfg)


@task(task_run_name="values-{user.user_id}", **TASK_OPTS)
def infer_values(user: UserInput, demo: Demographics, seeds: list[SeedStatement], cfg: ProfilesConfig,
                 model_key: str, client: ModelClient) -> Values:
    """A stance on every seed, K seeds per call, reviews first; then the value summary."""
    text, review_ids = facets.fit_reviews(user.reviews, cfg)
    template = load_prompt("profile_values")
    stances: dict[str, str] = {}
    batches = facets.batches(seeds, cfg.values_batch_size)
    try:
        for index, batch in enumerate(batches):
            ids = [s.id for s in batch]
            request = template.request(
                SamplingParams(max_tokens=12 * len(ids) + 16), facets.stance_schema(ids),
                demographics=describe(demo), reviews=text,
                statements=[{"id": s.id, "statement": s.statement} for s in batch])
            stances.update(client.structured(request, partial(facets.parse_stances, seed_ids=ids),
                                             stage="profiles.values", user_id=user.user_id,
                                             item_id=f"batch-{index}"))
        summary = _value_summary(user, demo, seeds, stances, cfg, client)
    finally:
        _flush(client)
    return Values(user_id=user.user_id, stances=stances, summary=summary, review_ids=review_ids,
                  calls=len(batches))


def _value_summary(user, demo, seeds, stances, cfg: ProfilesConfig, client: ModelClient) -> str:
    by_id = {s.id: s.statement for s in seeds}
    grouped = {"support": [by_id[i] for i, s in stances.items() if s == "support"],
               "no_support": [by_id[i] for i, s in stances.items() if s == "no support"]}
    request = load_prompt("profile_value_summary").request(
        SamplingParams(max_tokens=cfg.summary_max_tokens), demographics=describe(demo), stances=grouped,
        max_sentences=cfg.summary_max_sentences)
    return client.structured(request, partial(facets.parse_summary, max_sentences=cfg.summary_max_sentences),
                             stage="profiles.value_summary", user_id=user.user_id)


@task(task_run_name="personality-{user.user_id}", **TASK_OPTS)
def infer_personality(user: UserInput, demo: Demographics, cfg: ProfilesConfig, model_key: str,
                      client: ModelClient) -> Personality:
    """High/low per Big Five trait: an HF classifier when configured, else the LLM."""
    text, _ = facets.fit_reviews(user.reviews, cfg)
    if cfg.personality.backend == "hf":
        return Personality(user_id=user.user_id, levels=hf_classify_levels(cfg.personality, text),
                           source=f"hf:{cfg.personality.model}")
    request = load_prompt("profile_personality").request(
        SamplingParams(max_tokens=48), facets.levels_schema(), demographics=describe(demo), reviews=text)
    try:
        levels = client.structured(request, facets.parse_levels, stage="profiles.personality",
                                   user_id=user.user_id)
    finally:
        _flush(client)
    return Personality(user_id=user.user_id, levels=levels, source="llm")


@task(task_run_name="summary-{user.user_id}", **TASK_OPTS)
def summarize_user(user: UserInput, demo: Demographics, cfg: ProfilesConfig, model_key: str,
                   client: ModelClient) -> str:
    """The user summary (UserSummary / TriAgent baselines and the judge use it)."""
    text, _ = facets.fit_reviews(user.reviews, cfg)
    request = load_prompt("profile_user_summary").request(
        SamplingParams(max_tokens=cfg.summary_max_tokens), demographics=describe(demo), reviews=text,
        max_sentences=cfg.summary_max_sentences)
    try:
        return client.structured(request, partial(facets.parse_summary, max_sentences=cfg.summary_max_sentences),
                                 stage="profiles.user_summary", user_id=user.user_id)
    finally:
        _flush(client)
