"""Prefect tasks of personalized generation: the run's targets, one task run per user, the output table."""
from __future__ import annotations

from prefect import task

from gravity_core.evaluation.requests import first_request, persona_fields
from gravity_core.fences import fence
from gravity_core.generate import GENERATION_PROMPT, parse_description
from gravity_core.layout import GRAVITY, RunLayout
from gravity_core.llm import SamplingParams
from gravity_core.llm_config import LLMConfig
from gravity_core.pairs.build import profile_view
from gravity_core.records import Generation
from gravity_core.stage_configs import GenerateConfig
from tasks.caching import LLM_TASK
from tasks.evaluate.targets import targets_by_user
from tasks.llm.client import ModelClient
from tasks.llm.factory import generation_llm
from tasks.records_io import read_profiles, write_records
from tasks.resources import load_prompt



@task(name="load-targets")
def targets(layout: RunLayout) -> list[dict]:
    """Per user: profile view, persona + the run's target books (RUN_DIR/evaluate/targets.parquet,
    written by the `targets` stage and shared by every method)."""
    profiles = {p.user_id: p for p in read_profiles(layout)}
    return [{"profile": profile_view(profiles[u]), "persona": persona_fields(profiles[u].demographics.model_dump()),
             "books": books} for u, books in targets_by_user(layout).items() if u in profiles]


def target_user_ids(users: list[dict], method: str = GRAVITY) -> list[str]:
    """Item keys of one method's fan-out (user ids; `method:user` for the baselines)."""
    ids = [u["profile"]["user_id"] for u in users]
    return ids if method == GRAVITY else [f"{method}:{i}" for i in ids]


def generation_adapter(layout: RunLayout, llm: LLMConfig, method: str = GRAVITY) -> str | None:
    """The adapter the generate step uses: the recipe's own (`llm.steps.generate.adapter`), else
    the one training wrote for `method`, else none (the base model)."""
    if method == GRAVITY and llm.for_step("generate").adapter:
        return llm.for_step("generate").adapter
    folder = layout.adapter(method)
    return str(folder) if (folder / "adapter_config.json").exists() else None


@task(name="generation-plan")
def generation_plan(layout: RunLayout, llm: LLMConfig, trained: list[str]) -> tuple[list[dict], list[str]]:
    """Which methods generate, each with its model step and prompt: GRAVITY (its adapter, else the
    base model), then each trained baseline whose adapter exists. Returns (plans, warnings)."""
    plans = [{"method": GRAVITY, "step": "generate", "prompt": GENERATION_PROMPT[GRAVITY],
              "llm": generation_llm(llm, generation_adapter(layout, llm))}]
    warnings = []
    for method in trained:
        step, adapter = f"generate_{method}", generation_adapter(layout, llm, method)
        if llm.for_step("generate").backend != "openai":  # in-process: the adapter training wrote
            if adapter is None:
                warnings.append(f"{method}: no adapter in {layout.relative(layout.adapter(method))}; not generated")
                continue
            plans.append({"method": method, "step": step, "prompt": GENERATION_PROMPT[method],
                          "llm": generation_llm(llm, adapter, step)})
        elif step in llm.steps:  # a server (vLLM...) serving the adapter under its own model name
            plans.append({"method": method, "step": step, "prompt": GENERATION_PROMPT[method], "llm": llm})
        else:
            warnings.append(f"{method}: the generate backend is {llm.for_step('generate').backend!r}; set "
                            f"llm.steps.{step}.model to the served {method} adapter; not generated")
    return plans, warnings


@task(task_run_name="generate-{method}-{user[profile][user_id]}", **LLM_TASK)
def generate_for_user(user: dict, cfg: GenerateConfig, method: str, prompt: str, client: ModelClient) -> list[Generation]:
    """One method's descriptions of the user's target books, batched through the model layer:
    GRAVITY's profile-conditioned prompt, or (UserSFT, PrefAlign) the persona prompt."""
    template, view = load_prompt(prompt), user["profile"]
    params = SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
    if prompt == GENERATION_PROMPT[GRAVITY]:
        requests = [template.request(params, demographics=view["demographics"], value_summary=view["value_summary"],
                                     traits=view["traits"], title=fence(b["title"], "BOOK TITLE"),
                                     description=fence(b["description"], "BOOK DESCRIPTION")) for b in user["books"]]
    else:
        requests = [first_request("demo_based", template, params, user, b) for b in user["books"]]
    try:
        replies = client.complete_many(requests, stage="generate", user_id=view["user_id"],
                                       item_ids=[f"{b['parent_asin']}:{method}" if method != GRAVITY
                                                 else b["parent_asin"] for b in user["books"]])
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
