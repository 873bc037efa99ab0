"""PrefAlign's preference data (paper Table 12, appendix D.2): per user and book, an aligned
("more engaging and interesting") and a misaligned ("less engaging or interesting") description
written from the user's demographics only; one task run per user, then a TRL-ready DPO dataset."""
from __future__ import annotations

import polars as pl
from prefect import task

from gravity_core.evaluation.config import EvaluateConfig
from gravity_core.evaluation.requests import persona_fields
from gravity_core.evaluation.trained import prefalign_books
from gravity_core.fences import fence
from gravity_core.generate import parse_description
from gravity_core.layout import RunLayout
from gravity_core.llm import SamplingParams
from gravity_core.profile.assemble import interests_frame
from gravity_core.training.usersft import prefalign_rows
from tasks.caching import LLM_TASK
from tasks.fanout import batched
from tasks.llm.client import ModelClient
from tasks.records_io import read_profiles
from tasks.resources import load_prompt
from tasks.rundir import write_parquet_atomic

PAIRS_PROMPT, TRAINING_PROMPT = "baseline_prefalign_pairs", "baseline_prefalign_training"


@task(name="prefalign-inputs")
def prefalign_users(layout: RunLayout, cfg: EvaluateConfig, seed: int) -> list[dict]:
    """Per profiled user: persona and the books PrefAlign describes (reviewed, topped up)."""
    profiles = read_profiles(layout)
    books = prefalign_books(pl.read_parquet(layout.reviews, columns=["user_id", "parent_asin"]).unique(),
                            pl.read_parquet(layout.books, columns=["parent_asin", "title", "description", "genre"]),
                            interests_frame(profiles).select("user_id", "genre"), cfg.prefalign_books,
                            cfg.prefalign_max_books, seed)
    by_user = {key[0]: part.drop("user_id").to_dicts() for key, part in books.partition_by("user_id", as_dict=True).items()}
    return [{"user_id": p.user_id, "persona": persona_fields(p.demographics.model_dump()),
             "books": by_user.get(p.user_id, [])} for p in profiles]


def prefalign_batches(users: list[dict], size: int) -> list[dict]:
    """The users in batches of `run.users_per_task` (one task run each)."""
    return batched(users, [u["user_id"] for u in users], size)


@task(task_run_name="prefalign-{batch[label]}", **LLM_TASK)
def prefalign_for_users(batch: dict, cfg: EvaluateConfig, client: ModelClient) -> dict[str, list[dict]]:
    """Both descriptions of every book of a batch of users (`run.users_per_task`; usually one),
    one batch of calls per user through the model layer. A pair whose sides are unusable (too
    short) or identical teaches DPO nothing: it is returned with its reason instead of texts, so
    the stage can count it. Returns: {user_id: rows}."""
    return {user["user_id"]: _prefalign_user(user, cfg, client) for user in batch["items"]}


def _prefalign_user(user: dict, cfg: EvaluateConfig, client: ModelClient) -> list[dict]:
    template = load_prompt(PAIRS_PROMPT)
    params = SamplingParams(max_tokens=cfg.prefalign_max_tokens, temperature=cfg.baseline_temperature)
    jobs = [(b, aligned) for b in user["books"] for aligned in (True, False)]
    requests = [template.request(params, **user["persona"], book=fence(b["title"], "BOOK TITLE"),
                                 description=fence(b["description"], "BOOK DESCRIPTION"), aligned=aligned)
                for b, aligned in jobs]
    try:
        replies = client.complete_many(requests, stage="pairs", user_id=user["user_id"],
                                       item_ids=[f"{b['parent_asin']}:{'aligned' if a else 'misaligned'}"
                                                 for b, a in jobs])
    finally:
        client.ledger.flush()
    out = []
    for i, book in enumerate(user["books"]):
        row = {"user_id": user["user_id"], "parent_asin": book["parent_asin"]}
        try:
            aligned, misaligned = parse_description(replies[2 * i].text), parse_description(replies[2 * i + 1].text)
        except ValueError as exc:
            out.append({**row, "dropped": str(exc)})
            continue
        same = aligned.strip().lower() == misaligned.strip().lower()
        out.append({**row, "dropped": "aligned and misaligned descriptions are identical"} if same
                   else {**row, "aligned": aligned, "misaligned": misaligned})
    return out


@task(name="write-prefalign-data", log_prints=False)  # datasets: see tasks/train_stage.py
def write_prefalign(rows: dict[str, list[dict]], users: list[dict], layout: RunLayout) -> dict:
    """RUN_DIR/pairs/prefalign.parquet and the TRL-ready HF dataset RUN_DIR/pairs/prefalign/."""
    from datasets import Dataset, DatasetDict
    personas = {u["user_id"]: u["persona"] for u in users}
    made = [p for batch in rows.values() for user_rows in batch.values() for p in user_rows]
    kept = [p for p in made if "dropped" not in p]
    frame = prefalign_rows(kept, personas, load_prompt(TRAINING_PROMPT))
    write_parquet_atomic(frame, layout.prefalign_pairs)
    DatasetDict({"train": Dataset.from_polars(frame.select("prompt", "chosen", "rejected", "user_id", "parent_asin"))}
                ).save_to_disk(str(layout.prefalign_hf))
    return {"prefalign_pairs": frame.height,
            "prefalign_dropped": {f"{p['user_id']}:{p['parent_asin']}": p["dropped"] for p in made if "dropped" in p}}
