"""The LLM judge (appendix D.3): rankings over position-balanced orderings, 1-5 interestingness,
the sanity set, and similarity to the original (SentenceBERT cosine). One task run per user."""
from __future__ import annotations

import numpy as np
import polars as pl
from prefect import task

from gravity_core.evaluation.config import EvaluateConfig
from gravity_core.evaluation.parsing import (
    candidate_ids, ids_to_methods, parse_ranking, parse_score, ranking_schema, score_schema,
)
from gravity_core.evaluation.reliability import DEGRADED
from gravity_core.evaluation.requests import persona_fields, ranking_request, score_request
from gravity_core.evaluation.slate import candidate_texts, judge_items
from gravity_core.layout import RunLayout
from gravity_core.llm import SamplingParams
from gravity_core.records import Generation, Verdict
from tasks.caching import LLM_TASK
from tasks.embeddings import embed
from tasks.llm.client import ModelClient, StructuredOutputError
from tasks.records_io import read_frame, read_profiles, write_records
from tasks.resources import load_prompt
from tasks.rundir import write_parquet_atomic

SIMILARITY_SCHEMA = {"user_id": pl.String, "parent_asin": pl.String, "method": pl.String, "similarity": pl.Float64}


def all_generations(layout: RunLayout) -> pl.DataFrame:
    """Every method's generations of this run (RUN_DIR/generate/*/generations.parquet), schema checked."""
    files = sorted(layout.generate_root.glob(f"*/{layout.generations().name}"))
    if not files:
        raise FileNotFoundError(f"no generations under {layout.generate_root}: run generate and baselines first")
    return pl.concat([read_frame(f, Generation) for f in files])


@task(name="judge-inputs")
def judge_users(layout: RunLayout, cfg: EvaluateConfig, seed: int) -> list[dict]:
    """Per user: persona, user summary and the items to judge (see `gravity_core.evaluation.slate`)."""
    profiles = {p.user_id: p for p in read_profiles(layout)}
    items = judge_items(candidate_texts(all_generations(layout)), cfg.orderings, seed, cfg.sanity)
    return [{"user_id": u, "persona": persona_fields(profiles[u].demographics.model_dump()),
             "user_summary": profiles[u].user_summary, "items": its} for u, its in items.items() if u in profiles]


def item_count(users: list[dict]) -> int:
    """How many (user, book) items the judge sees."""
    return sum(len(u["items"]) for u in users)


@task(task_run_name="judge-{user[user_id]}", **LLM_TASK)
def judge_user(user: dict, cfg: EvaluateConfig, client: ModelClient) -> dict:
    """{"verdicts": rankings + scores, "sanity": sanity rankings, "failures": {item: reason}}.
    An item whose ranking fails in any ordering loses all its rankings (balance is per item)."""
    out = {"verdicts": [], "sanity": [], "failures": {}}
    for item in user["items"]:
        key = f"{user['user_id']}/{item['parent_asin']}"
        try:
            out["verdicts"] += _rankings(user, item, item["orderings"], cfg, client, item["texts"])
            out["verdicts"] += _scores(user, item, cfg, client)
            if "degraded" in item:
                texts = {**item["texts"], DEGRADED: item["degraded"]}
                out["sanity"] += _rankings(user, item, item["sanity_orderings"], cfg, client, texts)
        except StructuredOutputError as exc:
            out["failures"][key] = str(exc)[:300]
            out["verdicts"] = [v for v in out["verdicts"] if v.parent_asin != item["parent_asin"]]
            out["sanity"] = [v for v in out["sanity"] if v.parent_asin != item["parent_asin"]]
    client.ledger.flush()
    return out


def _judge(client: ModelClient) -> str:
    return f"{client.backend.identity.backend}/{client.backend.identity.model}"


def _rankings(user, item, orderings, cfg, client, texts) -> list[Verdict]:
    template, params = load_prompt("judge_ranking"), SamplingParams(max_tokens=cfg.judge_max_tokens, temperature=0.0)
    verdicts = []
    for index, shown in enumerate(orderings):
        ids = candidate_ids(len(shown), cfg.id_style)
        request = ranking_request(template, params, user, ids, [texts[m] for m in shown], ranking_schema(ids))
        ranked = client.structured(request, lambda text, ids=ids: parse_ranking(text, ids), stage="judge",
                                   user_id=user["user_id"], item_id=f"{item['parent_asin']}:{index}")
        verdicts.append(Verdict(user_id=user["user_id"], parent_asin=item["parent_asin"], kind="ranking",
                                judge_model=_judge(client), ordering=index, candidates=list(shown),
                                ranking=ids_to_methods(ranked, ids, list(shown)), prompt_version=template.version))
    return verdicts


def _scores(user, item, cfg, client) -> list[Verdict]:
    template, params = load_prompt("judge_interestingness"), SamplingParams(max_tokens=16, temperature=0.0)
    verdicts = []
    for method, text in sorted(item["texts"].items()):
        request = score_request(template, params, user, text, score_schema())
        score = client.structured(request, parse_score, stage="judge", user_id=user["user_id"],
                                  item_id=f"{item['parent_asin']}:{method}")
        verdicts.append(Verdict(user_id=user["user_id"], parent_asin=item["parent_asin"], kind="score",
                                judge_model=_judge(client), method=method, score=score,
                                prompt_version=template.version))
    return verdicts


@task(name="similarity")
def write_similarity(layout: RunLayout, cfg: EvaluateConfig) -> int:
    """RUN_DIR/evaluate/similarity.parquet: user_id, parent_asin, method, similarity (cosine of the
    SentenceBERT embeddings of each description and the original, section 4.1)."""
    gens = all_generations(layout)
    generated = embed(gens["generated"].to_list(), cfg.embedding_model)
    original = embed(gens["original"].to_list(), cfg.embedding_model)
    frame = gens.select("user_id", "parent_asin", "method").with_columns(
        pl.Series("similarity", np.sum(generated * original, axis=1).astype(float)))
    write_parquet_atomic(frame.cast(SIMILARITY_SCHEMA), layout.similarity)
    return frame.height


@task(name="write-verdicts")
def write_verdicts(results: dict[str, dict], layout: RunLayout) -> tuple[dict[str, int], dict[str, str]]:
    """RUN_DIR/evaluate/verdicts.parquet (rankings + scores) and sanity.parquet (typed `Verdict` rows);
    returns row counts and the items that failed."""
    verdicts = [v for r in results.values() for v in r["verdicts"]]
    sanity = [v for r in results.values() for v in r["sanity"]]
    failures = {k: why for r in results.values() for k, why in r["failures"].items()}
    write_records(verdicts, Verdict, layout.verdicts)
    write_records(sanity, Verdict, layout.sanity_verdicts)
    rankings = sum(v.kind == "ranking" for v in verdicts)
    return {"rankings": rankings, "scores": len(verdicts) - rankings, "sanity": len(sanity)}, failures
