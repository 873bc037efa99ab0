"""`make deploy`: prepare the Prefect server at PREFECT_API_URL for GRAVITY (docs/operations.md).

Idempotent; each step creates what is missing and updates what changed:
1. the work pools `gravity-gpu` and `gravity-cpu` (process pools);
2. the global concurrency / rate limits `gravity-llm-<backend>` that tasks/llm/limits.py takes,
   sized from the deployed recipes' `llm` sections;
3. the deployments of deployments/prefect.yaml (`prefect deploy`);
4. with GRAVITY_WEBHOOK_URL set: a webhook notification block and an automation that posts to it
   when a `gravity-pipeline` run ends Failed or Crashed;
then it prints how to start a worker. `--api-key-block NAME` stores an endpoint API key, read
from stdin, as a Prefect Secret block (name it in the recipe: `llm.default.api_key_block`).
"""
from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREFECT_FILE = ROOT / "deployments" / "prefect.yaml"
POOLS = ("gravity-gpu", "gravity-cpu")
DEPLOYED_RECIPES = ("paper", "sample")  # the recipes prefect.yaml's deployments run
FLOW_NAME = "gravity-pipeline"
NOTIFY_BLOCK = "gravity-run-failures"
AUTOMATION = "gravity-pipeline failed or crashed"


@dataclass(frozen=True)
class LimitSpec:
    """One Prefect global concurrency limit; `per_second` > 0 also makes it a rate limit."""

    name: str
    limit: int
    per_second: float | None


def llm_limits(recipe_names: tuple[str, ...] = DEPLOYED_RECIPES) -> list[LimitSpec]:
    """One limit per model backend any deployed recipe uses (the strictest setting wins), named
    as tasks/llm/limits.py names them: `gravity-llm-<backend>`."""
    from gravity_core.recipe import parse_recipe
    found: dict[str, LimitSpec] = {}
    for name in recipe_names:
        path = ROOT / "recipes" / f"{name}.yaml"
        llm = parse_recipe(path.read_text(encoding="utf-8"), source=str(path)).llm
        for backend in [llm.default, *(llm.for_step(step) for step in llm.steps)]:
            if backend.limits.use_prefect:
                found[backend.backend] = _stricter(found.get(backend.backend), LimitSpec(
                    f"gravity-llm-{backend.backend}", backend.limits.max_concurrency,
                    backend.limits.requests_per_second))
    return sorted(found.values(), key=lambda spec: spec.name)


def _stricter(old: LimitSpec | None, new: LimitSpec) -> LimitSpec:
    if old is None:
        return new
    rates = [r for r in (old.per_second, new.per_second) if r]
    return LimitSpec(new.name, min(old.limit, new.limit), min(rates) if rates else None)


async def ensure_pools(names: tuple[str, ...] = POOLS) -> None:
    """Create the process work pools that are missing (existing pools are left as configured)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker
    async with get_client() as client:
        for name in names:
            try:
                await client.read_work_pool(name)
                print(f"work pool {name}: exists")
            except ObjectNotFound:
                await client.create_work_pool(WorkPoolCreate(
                    name=name, type="process", base_job_template=ProcessWorker.get_default_base_job_template()))
                print(f"work pool {name}: created (process)")


async def ensure_limits(specs: list[LimitSpec]) -> None:
    """Create or update the `gravity-llm-<backend>` global concurrency and rate limits."""
    from prefect.client.orchestration import get_client
    async with get_client() as client:
        for spec in specs:
            await client.upsert_global_concurrency_limit_by_name(spec.name, spec.limit, spec.per_second or 0.0)
            rate = f", {spec.per_second}/s" if spec.per_second else ""
            print(f"limit {spec.name}: {spec.limit} concurrent{rate}")


def register_deployments(working_dir: Path) -> None:
    """`prefect --no-prompt deploy --all` on deployments/prefect.yaml from the repository root.
    PWD is what the yaml's `{{ $PWD }}` (the process workers' working_dir) resolves to."""
    cmd = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file",
           str(PREFECT_FILE.relative_to(ROOT))]
    subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PWD": str(working_dir)}, check=True)


async def ensure_failure_notification(url: str) -> None:
    """A webhook block (the URL kept as a secret value) and an automation that posts to it when a
    `gravity-pipeline` flow run ends Failed or Crashed."""
    from prefect.automations import Automation, EventTrigger, Posture, SendNotification
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    block = CustomWebhookNotificationBlock(
        name=NOTIFY_BLOCK, url="{{webhook_url}}", secrets={"webhook_url": url},
        json_data={"text": "{{subject}}\n{{body}}", "source": "{{name}}"})
    block_id = await block.save(NOTIFY_BLOCK, overwrite=True)
    await _drop_automation(AUTOMATION)
    await Automation(
        name=AUTOMATION, description="Notify the GRAVITY webhook of failed or crashed pipeline runs.",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": FLOW_NAME},
            posture=Posture.Reactive, threshold=1),
        actions=[SendNotification(
            block_document_id=block_id,
            subject="GRAVITY run {{ flow_run.name }} {{ flow_run.state.name }}",
            body="Flow run {{ flow_run.name }} ({{ flow_run.id }}) of deployment {{ deployment.name }} "
                 "ended {{ flow_run.state.name }}: {{ flow_run.state.message }}")],
    ).acreate()
    print(f"automation '{AUTOMATION}': notifies webhook block {NOTIFY_BLOCK}")


async def _drop_automation(name: str) -> None:
    from prefect.client.orchestration import get_client
    async with get_client() as client:
        for existing in await client.read_automations_by_name(name):
            await client.delete_automation(existing.id)


async def store_api_key(block_name: str, key: str) -> None:
    """Save an endpoint API key as a Prefect Secret block (tasks/llm/secrets.py reads it)."""
    from prefect.blocks.system import Secret
    await Secret(value=key).save(block_name, overwrite=True)
    print(f"secret block {block_name}: saved (set llm.default.api_key_block: {block_name} in the recipe)")


def worker_hint(api_url: str) -> str:
    return "\n".join([
        "Start a worker for each pool (on the machine that runs the flows), e.g.:",
        f"  PREFECT_API_URL={api_url} .venv/bin/prefect worker start --pool gravity-gpu",
        f"  PREFECT_API_URL={api_url} .venv/bin/prefect worker start --pool gravity-cpu",
        "or the images' worker (docker/README.md):",
        f"  docker run -d --gpus all -e PREFECT_API_URL={api_url} "
        "-v gravity-runs:/app/runs -v gravity-cache:/app/.gravity gravity:gpu"])


def _read_key() -> str:
    key = getpass.getpass("API key: ") if sys.stdin.isatty() else sys.stdin.readline().strip()
    if not key:
        raise SystemExit("error: no API key on stdin")
    return key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--working-dir", type=Path, default=ROOT,
                        help="the process workers' working directory (default: this repository; "
                             "/app for process workers inside the gravity images)")
    parser.add_argument("--api-key-block", metavar="NAME",
                        help="also store an API key read from stdin as the Prefect Secret block NAME")
    args = parser.parse_args(argv)
    api_url = os.environ.get("PREFECT_API_URL")
    if not api_url:
        print("error: set PREFECT_API_URL to the Prefect server's API (e.g. http://127.0.0.1:4200/api)",
              file=sys.stderr)
        return 2
    asyncio.run(ensure_pools())
    asyncio.run(ensure_limits(llm_limits()))
    if args.api_key_block:
        asyncio.run(store_api_key(args.api_key_block, _read_key()))
    register_deployments(args.working_dir)
    if webhook := os.environ.get("GRAVITY_WEBHOOK_URL"):
        asyncio.run(ensure_failure_notification(webhook))
    print(worker_hint(api_url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
