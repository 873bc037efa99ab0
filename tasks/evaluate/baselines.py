"""Prompting baselines (paper Table 12, appendix D.2): one task run per user, every method."""
from __future__ import annotations

import polars as pl
from prefect import task

from gravity_core.evaluation.config import EvaluateConfig
from gravity_core.evaluation.requests import (
    BASELINE_PROMPTS, TRIAGENT_PROMPTS, edit_request, final_request, first_request, persona_fields,
)
from gravity_core.generate import parse_description
from gravity_core.layout import RunLayout
from gravity_core.llm import SamplingParams
from gravity_core.records import Generation
from tasks.caching import LLM_TASK
from tasks.evaluate.lamp import nearest_reviews, reviewed_books
from tasks.evaluate.targets import targets_by_user
from tasks.llm.client import ModelClient
from tasks.records_io import read_profiles, write_records
from tasks.resources import load_prompt


@task(name="baseline-inputs")
def baseline_users(layout: RunLayout, cfg: EvaluateConfig) -> list[dict]:
    """Per user: persona, user summary, profile version and the target books, each with LaMP's
    retrieved reviews (only when LaMP is among the baselines)."""
    profiles = {p.user_id: p for p in read_profiles(layout)}
    history = (reviewed_books(pl.read_parquet(layout.reviews), pl.read_parquet(layout.books))
               if "lamp" in cfg.baselines else None)
    users = []
    for user_id, books in targets_by_user(layout).items():
        if user_id not in profiles:
            continue
        if history is not None:
            mine = history.filter(pl.col("user_id") == user_id)
            near = nearest_reviews(mine, [b["description"] for b in books], cfg.lamp_reviews, cfg.embedding_model)
            books = [{**b, "lamp_reviews": r} for b, r in zip(books, near)]
        profile = profiles[user_id]
        users.append({"user_id": user_id, "profile_version": profile.profile_version,
                      "persona": persona_fields(profile.demographics.model_dump()),
                      "user_summary": profile.user_summary, "books": books})
    return users


def _params(cfg: EvaluateConfig, max_tokens: int | None = None) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens or cfg.baseline_max_tokens, temperature=cfg.baseline_temperature)


@task(task_run_name="baselines-{user[user_id]}", **LLM_TASK)
def baselines_for_user(user: dict, cfg: EvaluateConfig, client: ModelClient) -> list[Generation]:
    """Every prompting baseline's description of every target book of one user: one batch of
    single calls (TriAgent's first), then TriAgent's edits, then its final rewrites."""
    methods, params = list(cfg.baselines), _params(cfg)
    jobs = [(m, b) for b in user["books"] for m in methods]
    replies = _texts(client, [first_request(m, load_prompt(BASELINE_PROMPTS[m]), params, user, b) for m, b in jobs],
                     user, [f"{b['parent_asin']}:{m}" for m, b in jobs])
    texts = {(m, b["parent_asin"]): t for (m, b), t in zip(jobs, replies)}
    prompts = {m: load_prompt(BASELINE_PROMPTS[m]).version for m in methods}
    if "triagent" in methods:
        texts.update(_triagent(user, cfg, client, texts))
        prompts["triagent"] = "+".join([prompts["triagent"], *(load_prompt(p).version for p in TRIAGENT_PROMPTS)])
    identity = client.backend.identity
    return [Generation(user_id=user["user_id"], parent_asin=b["parent_asin"], method=m, title=b["title"],
                       genre=b["genre"], original=b["description"],
                       generated=parse_description(texts[(m, b["parent_asin"])]),
                       profile_version=user["profile_version"], model=f"{identity.backend}/{identity.model}",
                       adapter=identity.adapter, prompt_version=prompts[m]) for m, b in jobs]


def _texts(client: ModelClient, requests: list, user: dict, item_ids: list[str]) -> list[str]:
    try:
        return [r.text for r in client.complete_many(requests, stage="baselines", user_id=user["user_id"],
                                                     item_ids=item_ids)]
    finally:
        client.ledger.flush()


def _triagent(user: dict, cfg: EvaluateConfig, client: ModelClient, texts: dict) -> dict:
    """TriAgent calls 2 and 3 (Table 12) on call 1's drafts; returns the final texts by (method, book)."""
    edit_t, final_t = (load_prompt(p) for p in TRIAGENT_PROMPTS)
    books = user["books"]
    drafts = [texts[("triagent", b["parent_asin"])].strip() for b in books]
    edits = _texts(client, [edit_request(edit_t, _params(cfg, cfg.edits_max_tokens), user, d) for d in drafts],
                   user, [f"{b['parent_asin']}:triagent-edit" for b in books])
    finals = _texts(client, [final_request(final_t, _params(cfg), user, b, d, e.strip() or "-")
                             for b, d, e in zip(books, drafts, edits)],
                    user, [f"{b['parent_asin']}:triagent-final" for b in books])
    return {("triagent", b["parent_asin"]): t for b, t in zip(books, finals)}


@task(name="write-baselines")
def write_baselines(rows: dict[str, list[Generation]], layout: RunLayout, methods: list[str]) -> dict[str, int]:
    """RUN_DIR/generate/<method>/generations.parquet for each baseline (typed `Generation` rows)."""
    records = [r for user_rows in rows.values() for r in user_rows]
    counts = {}
    for method in methods:
        mine = [r for r in records if r.method == method]
        counts[method] = write_records(mine, Generation, layout.generations(method))
    return counts
