"""Prefect tasks of personalized generation: the run's targets, one task run per user, the output table."""
from __future__ import annotations

from prefect import task

from gravity_core.fences import fence
from gravity_core.generate import parse_description
from gravity_core.layout import GRAVITY, RunLayout
from gravity_core.llm import SamplingParams
from gravity_core.llm_config import LLMConfig
from gravity_core.pairs.build import profile_view
from gravity_core.records import Generation
from gravity_core.stage_configs import GenerateConfig
from tasks.caching import LLM_TASK
from tasks.evaluate.targets import targets_by_user
from tasks.llm.client import ModelClient
from tasks.records_io import read_profiles, write_records
from tasks.resources import load_prompt

PROMPT = "generate_description"


@task(name="load-targets")
def targets(layout: RunLayout) -> list[dict]:
    """Per user: profile view + the run's target books (RUN_DIR/evaluate/targets.parquet, written
    by the `targets` stage and shared by every method)."""
    profiles = {p.user_id: p for p in read_profiles(layout)}
    return [{"profile": profile_view(profiles[u]), "books": books}
            for u, books in targets_by_user(layout).items() if u in profiles]


def target_user_ids(users: list[dict]) -> list[str]:
    return [u["profile"]["user_id"] for u in users]


def generation_adapter(layout: RunLayout, llm: LLMConfig, method: str = GRAVITY) -> str | None:
    """The adapter the generate step uses: the recipe's own (`llm.steps.generate.adapter`), else
    the one training wrote for `method`, else none (the base model)."""
    if llm.for_step("generate").adapter:
        return llm.for_step("generate").adapter
    folder = layout.adapter(method)
    return str(folder) if (folder / "adapter_config.json").exists() else None


@task(task_run_name="generate-{user[profile][user_id]}", **LLM_TASK)
def generate_for_user(user: dict, cfg: GenerateConfig, method: str, client: ModelClient) -> list[Generation]:
    """Personalized descriptions of the user's target books, batched through the model layer."""
    template, view = load_prompt(PROMPT), user["profile"]
    params = SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
    requests = [template.request(params, demographics=view["demographics"], value_summary=view["value_summary"],
                                 traits=view["traits"], title=fence(b["title"], "BOOK TITLE"),
                                 description=fence(b["description"], "BOOK DESCRIPTION"))
                for b in user["books"]]
    try:
        replies = client.complete_many(requests, stage="generate", user_id=view["user_id"],
                                       item_ids=[b["parent_asin"] for b in user["books"]])
    finally:
        client.ledger.flush()
    identity = client.backend.identity
    return [Generation(user_id=view["user_id"], parent_asin=b["parent_asin"], method=method, title=b["title"],
                       genre=b["genre"], original=b["description"], generated=parse_description(r.text),
                       profile_version=view["profile_version"], model=f"{identity.backend}/{identity.model}",
                       adapter=identity.adapter, prompt_version=template.version, finish_reason=r.finish_reason)
            for b, r in zip(user["books"], replies)]


@task(name="write-generations")
def write_generations(rows: dict[str, list[Generation]], layout: RunLayout, method: str) -> dict:
    """RUN_DIR/generate/<method>/generations.parquet (typed `Generation` rows)."""
    records = [r for user_rows in rows.values() for r in user_rows]
    write_records(records, Generation, layout.generations(method))
    return {"generations": len(records), "users": len({r.user_id for r in records})}
