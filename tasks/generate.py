"""Prefect tasks of personalized generation: targets, one task run per user, the output table."""
from __future__ import annotations

from pathlib import Path

import polars as pl
from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from gravity_core.generate import GENERATION_SCHEMA, parse_description, select_targets
from gravity_core.llm import SamplingParams
from gravity_core.pairs.build import profile_view
from gravity_core.profile.assemble import interests_frame
from gravity_core.stage_configs import GenerateConfig
from tasks.llm.client import ModelClient
from tasks.profile_io import read_profiles
from tasks.resources import load_prompt
from tasks.rundir import write_parquet_atomic

PROMPT = "generate_description"


def generation_model_key(client: ModelClient) -> str:
    """Backend identity (adapter content hash included) + prompt version: the per-user cache key."""
    return f"{client.backend.identity.model_dump_json()}|{PROMPT}@{load_prompt(PROMPT).version}"


@task(name="select-targets")
def targets(run_dir: str, cfg: GenerateConfig) -> list[dict]:
    """Per user: profile view + K target books (rows grouped by user)."""
    run = Path(run_dir)
    profiles = {p["user_id"]: p for p in read_profiles(run)}
    chosen = select_targets(pl.scan_parquet(run / "ingest" / "books.parquet"),
                            interests_frame(list(profiles.values())).lazy(),
                            pl.scan_parquet(run / "ingest" / "reviews.parquet").select("user_id", "parent_asin"),
                            cfg.books_per_user, cfg.min_book_rating)
    return [{"profile": profile_view(profiles[u]), "books": frame.drop("user_id").to_dicts()}
            for (u,), frame in chosen.group_by("user_id", maintain_order=True)]


@task(task_run_name="generate-{user[profile][user_id]}", cache_policy=(INPUTS - "client") + TASK_SOURCE,
      persist_result=True, retries=1, retry_delay_seconds=2)
def generate_for_user(user: dict, cfg: GenerateConfig, model_key: str, client: ModelClient) -> list[dict]:
    """Personalized descriptions of the user's target books, batched through the model layer."""
    template, view = load_prompt(PROMPT), user["profile"]
    params = SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
    requests = [template.request(params, demographics=view["demographics"], value_summary=view["value_summary"],
                                 traits=view["traits"], title=b["title"], description=b["description"])
                for b in user["books"]]
    try:
        replies = client.complete_many(requests, stage="generate", user_id=view["user_id"],
                                       item_ids=[b["parent_asin"] for b in user["books"]])
    finally:
        client.ledger.flush()
    identity = client.backend.identity
    return [{"user_id": view["user_id"], "parent_asin": b["parent_asin"], "title": b["title"], "genre": b["genre"],
             "original": b["description"], "generated": parse_description(r.text),
             "profile_version": view["profile_version"], "model": f"{identity.backend}/{identity.model}",
             "adapter": identity.adapter, "prompt_version": template.version, "finish_reason": r.finish_reason}
            for b, r in zip(user["books"], replies)]


@task(name="write-generations")
def write_generations(rows: dict[str, list[dict]], out_dir: str) -> dict:
    frame = pl.DataFrame([r for user_rows in rows.values() for r in user_rows], schema=GENERATION_SCHEMA)
    write_parquet_atomic(frame, Path(out_dir) / "generations.parquet")
    return {"generations": frame.height, "users": frame["user_id"].n_unique()}
