"""Prefect tasks of the profile stage: one task run per user per facet (GRAVITY 3.2), or one
task run per batch of users (`run.users_per_task`) for cohorts of thousands.

Each task renders a bundled prompt, calls the injected `ModelClient` and parses with the
pure functions of `gravity_core.profile`. Cache keys cover the inputs, the client's identity
and the code and prompts the task depends on (`tasks.caching`).
"""
from __future__ import annotations

import logging
from functools import partial

from prefect import task

from gravity_core.banks import SeedStatement
from gravity_core.llm import LabelScores, SamplingParams, ScoreRequest, UnsupportedFeature
from gravity_core.profile import facets, scoring
from gravity_core.profile.config import ProfilesConfig
from gravity_core.profile.country import country_schema, parse_country
from gravity_core.profile.records import (
    AGE_BINS, GENDERS, TRAITS, Demographics, Interests, Personality, UserInput, Values, age_bin,
)
from tasks.caching import LLM_TASK
from tasks.classifiers import hf_classify_levels, hf_classify_label
from tasks.llm.client import ModelClient
from tasks.resources import load_prompt

log = logging.getLogger(__name__)

PROFILE_PROMPTS = ("profile_values", "profile_values_scored", "profile_value_summary", "profile_user_summary",
                   "profile_personality", "profile_personality_scored", "profile_demographics", "profile_country")


def infer_country(user: UserInput, options: list[str], cfg: ProfilesConfig, client: ModelClient,
                  stage: str) -> str | None:
    """The user's likely country among `options` (None = other / no sign). One cached call."""
    text, _ = facets.fit_reviews(user.reviews, cfg)
    request = load_prompt("profile_country").request(SamplingParams(max_tokens=16), country_schema(options),
                                                     reviews=text, options=options)
    return client.structured(request, partial(parse_country, options=options), stage=stage, user_id=user.user_id)


def _given(user: UserInput) -> tuple[dict, dict]:
    values = {"country": user.country, "age_bin": age_bin(user.age) if user.age is not None else None,
              "gender": user.gender}
    sources = {"country": user.country_source if user.country else "unknown",
               "age": "given" if user.age is not None else "unknown", "gender": "given" if user.gender else "unknown"}
    return values, sources


@task(task_run_name="demographics-{user.user_id}", **LLM_TASK)
def infer_demographics(user: UserInput, cfg: ProfilesConfig, countries: list[str], client: ModelClient) -> Demographics:
    """Given attributes win; a missing country, age bin or gender is inferred (LLM or HF classifier)."""
    values, sources = _given(user)
    text, _ = facets.fit_reviews(user.reviews, cfg)
    try:
        if values["country"] is None and cfg.infer_country:
            values["country"] = infer_country(user, countries, cfg, client, "profiles.demographics")
            sources["country"] = "inferred:llm" if values["country"] else "unknown"
        for field, attr, conf, allowed in (("age_bin", "age", cfg.age, AGE_BINS), ("gender", "gender", cfg.gender, GENDERS)):
            if values[field] is None and conf.backend == "hf":
                values[field], sources[attr] = hf_classify_label(conf, text, allowed), "inferred:hf"
        missing = [f for f in ("age_bin", "gender") if values[f] is None]
        if missing:
            request = load_prompt("profile_demographics").request(
                SamplingParams(max_tokens=16), facets.demographics_schema(missing), reviews=text, fields=missing)
            values.update(client.structured(request, partial(facets.parse_demographics, fields=missing),
                                            stage="profiles.demographics", user_id=user.user_id))
            sources.update({("age" if f == "age_bin" else f): "inferred:llm" for f in missing})
    finally:
        client.ledger.flush()
    return Demographics(user_id=user.user_id, country=values["country"], age=user.age, age_bin=values["age_bin"],
                        gender=values["gender"], sources=sources)


@task(task_run_name="interests-{user.user_id}", **LLM_TASK)
def infer_interests(user: UserInput, cfg: ProfilesConfig) -> Interests:
    """Genres covering >= threshold of the user's reviews (no model call)."""
    return facets.interests(user, cfg)


@task(task_run_name="values-{user.user_id}", **LLM_TASK)
def infer_values(user: UserInput, demo: Demographics, seeds: list[SeedStatement], cfg: ProfilesConfig,
                 client: ModelClient) -> Values:
    """A stance on every seed, K seeds per call, reviews first; then the value summary. Scored
    where the backend can (`profiles.scoring: likelihood`): a batch whose reply cannot be scored
    (an endpoint's model did not answer in lines) is asked as JSON on its own, and a backend that
    cannot score at all is asked as JSON from that batch on."""
    text, review_ids = facets.fit_reviews(user.reviews, cfg)
    batches = facets.batches(seeds, cfg.values_batch_size)
    stances: dict[str, str] = {}
    scores: dict[str, dict[str, float]] = {}
    can_score, method = cfg.scoring == "likelihood", "generate"
    try:
        for index, batch in enumerate(batches):
            if can_score:
                try:
                    result = score_batch(user, demo, text, index, batch, client)
                except UnsupportedFeature as exc:
                    can_score = exc.feature == "scorable_reply"
                    log.warning("values of %s, batch %d: %s; asked as JSON%s", user.user_id, index, exc,
                                "" if can_score else " from here on")
                else:
                    scores.update(result.scores)
                    stances.update(scoring.stances(result.scores, cfg.neutral_margin))
                    method = result.method
                    continue
            stances.update(_written_stances(user, demo, text, index, batch, client))
        summary = _value_summary(user, demo, seeds, stances, cfg, client)
    finally:
        client.ledger.flush()
    return Values(user_id=user.user_id, stances=stances, summary=summary, review_ids=review_ids,
                  calls=len(batches), method=method, scores=scores)


def _written_stances(user: UserInput, demo: Demographics, text: str, index: int, batch: list[SeedStatement],
                     client: ModelClient) -> dict[str, str]:
    """One batch's stances written by the model as JSON."""
    ids = [s.id for s in batch]
    request = load_prompt("profile_values").request(
        SamplingParams(max_tokens=12 * len(ids) + 16), facets.stance_schema(ids),
        demographics=demo.describe(), reviews=text,
        statements=facets.statement_rows(batch))
    return client.structured(request, partial(facets.parse_stances, seed_ids=ids), stage="profiles.values",
                             user_id=user.user_id, item_id=f"batch-{index}")


def score_batch(user: UserInput, demo: Demographics, text: str, index: int, batch: list[SeedStatement],
                client: ModelClient) -> LabelScores:
    """One batch's label log-probabilities (reviews first, so the batch shares its prefix with the
    reader's other batches)."""
    template = load_prompt("profile_values_scored")
    messages = template.render(demographics=demo.describe(), reviews=text,
                               statements=facets.statement_rows(batch))
    request = ScoreRequest(messages=messages, items=tuple(s.id for s in batch), labels=scoring.STANCES,
                           prompt_name=template.name, prompt_version=template.version)
    return client.score(request, stage="profiles.values", user_id=user.user_id, item_id=f"batch-{index}")


def score_stances(user: UserInput, demo: Demographics, text: str, batches: list[list[SeedStatement]],
                  client: ModelClient) -> tuple[dict[str, dict[str, float]], str, int]:
    """Label log-probabilities of every seed, one scored request per batch (bench/bench_stances.py).
    Returns (scores, method, input tokens)."""
    scores: dict[str, dict[str, float]] = {}
    method, tokens = "likelihood", 0
    for index, batch in enumerate(batches):
        result = score_batch(user, demo, text, index, batch, client)
        scores.update(result.scores)
        method, tokens = result.method, tokens + result.input_tokens
    return scores, method, tokens


def _value_summary(user, demo, seeds, stances, cfg: ProfilesConfig, client: ModelClient) -> str:
    by_id = {s.id: s.statement for s in seeds}
    grouped = {"support": [by_id[i] for i, s in stances.items() if s == "support"],
               "no_support": [by_id[i] for i, s in stances.items() if s == "no support"]}
    request = load_prompt("profile_value_summary").request(
        SamplingParams(max_tokens=cfg.summary_max_tokens), demographics=demo.describe(), stances=grouped,
        max_sentences=cfg.summary_max_sentences)
    return client.structured(request, partial(facets.parse_summary, max_sentences=cfg.summary_max_sentences),
                             stage="profiles.value_summary", user_id=user.user_id)


@task(task_run_name="personality-{user.user_id}", **LLM_TASK)
def infer_personality(user: UserInput, demo: Demographics, cfg: ProfilesConfig, client: ModelClient) -> Personality:
    """High/low per Big Five trait: an HF classifier when configured, else the LLM."""
    text, _ = facets.fit_reviews(user.reviews, cfg)
    if cfg.personality.backend == "hf":
        return Personality(user_id=user.user_id, levels=hf_classify_levels(cfg.personality, text),
                           source=f"hf:{cfg.personality.model}")
    try:
        if cfg.scoring == "likelihood":
            template = load_prompt("profile_personality_scored")
            request = ScoreRequest(messages=template.render(demographics=demo.describe(), reviews=text),
                                   items=TRAITS, labels=scoring.LEVELS, prompt_name=template.name,
                                   prompt_version=template.version)
            try:
                result = client.score(request, stage="profiles.personality", user_id=user.user_id)
                return Personality(user_id=user.user_id, levels=scoring.levels(result.scores),
                                   source=f"llm:{result.method}", scores=result.scores)
            except UnsupportedFeature:
                pass  # this backend cannot score labels: the model writes them as JSON
        request = load_prompt("profile_personality").request(
            SamplingParams(max_tokens=48), facets.levels_schema(), demographics=demo.describe(), reviews=text)
        levels = client.structured(request, facets.parse_levels, stage="profiles.personality", user_id=user.user_id)
    finally:
        client.ledger.flush()
    return Personality(user_id=user.user_id, levels=levels, source="llm")


@task(task_run_name="summary-{user.user_id}", **LLM_TASK)
def summarize_user(user: UserInput, demo: Demographics, cfg: ProfilesConfig, client: ModelClient) -> str:
    """The user summary (UserSummary / TriAgent baselines and the judge use it)."""
    text, _ = facets.fit_reviews(user.reviews, cfg)
    request = load_prompt("profile_user_summary").request(
        SamplingParams(max_tokens=cfg.summary_max_tokens), demographics=demo.describe(), reviews=text,
        max_sentences=cfg.summary_max_sentences)
    try:
        return client.structured(request, partial(facets.parse_summary, max_sentences=cfg.summary_max_sentences),
                                 stage="profiles.user_summary", user_id=user.user_id)
    finally:
        client.ledger.flush()


FACETS = ("interests", "values", "personality", "summary")


@task(task_run_name="profiles-{batch[label]}", **LLM_TASK)
def profile_batch(batch: dict, seeds: list[SeedStatement], cfg: ProfilesConfig, countries: list[str],
                  client: ModelClient) -> dict:
    """Every facet of a batch of users in one task run (the same work as the per-facet tasks). A
    user whose facet fails is reported with the reason, never failing the batch.
    Returns: {"facets": {facet: {user_id: value}}, "failures": {user_id: reason}}."""
    out: dict = {"facets": {f: {} for f in ("demographics", *FACETS)}, "failures": {}}
    for user in batch["items"]:
        facet = "demographics"
        try:
            demo = infer_demographics.fn(user, cfg, countries, client)
            values = {"demographics": demo}
            for facet, run in (("interests", lambda: infer_interests.fn(user, cfg)),
                               ("values", lambda: infer_values.fn(user, demo, seeds, cfg, client)),
                               ("personality", lambda: infer_personality.fn(user, demo, cfg, client)),
                               ("summary", lambda: summarize_user.fn(user, demo, cfg, client))):
                values[facet] = run()
        except Exception as exc:  # noqa: BLE001 - one user's failure is that user's row, not the batch's
            out["failures"][user.user_id] = (f"{facet}: " if facet != "demographics" else "") + \
                f"{type(exc).__name__}: {exc}"[:500]
            continue
        for name, value in values.items():
            out["facets"][name][user.user_id] = value
    return out
