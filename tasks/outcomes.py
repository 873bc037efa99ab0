"""Stage outcomes (`StageResult`) of the stages whose work spans several methods.

Kept apart from the cached tasks' modules on purpose: a task's cache key covers the code its
module imports, and the stage wrapper's code must not retrain an adapter when it changes."""
from __future__ import annotations

from gravity_core.layout import GRAVITY, RunLayout
from tasks.llm.client import ModelClient
from tasks.stage import StageResult


def train_result(layout: RunLayout, summaries: dict[str, dict], evaluation: dict) -> StageResult:
    """The train stage's outcome: GRAVITY's adapter and held-out evaluation, every baseline adapter."""
    summary = summaries[GRAVITY]
    baselines = {m: s for m, s in summaries.items() if m != GRAVITY}
    return StageResult(done=f"{summary['steps']} {summary['method']} steps, {len(baselines)} baseline adapters",
                       what="adapters", total=len(summaries),
                       artifacts={"adapter": layout.adapter(GRAVITY), "metrics": layout.train_metrics(GRAVITY),
                                  "heldout_eval": layout.heldout_eval(GRAVITY),
                                  **{f"adapter_{m}": layout.adapter(m) for m, s in baselines.items() if s["adapter"]}},
                       rows={"steps": summary["steps"], "train_rows": int(summary["metrics"]["train_rows"]),
                             **{f"{m}_steps": s["steps"] for m, s in baselines.items()}},
                       warnings=[f"{m} not trained: {s['skipped']}" for m, s in baselines.items() if s.get("skipped")],
                       notes={"train_seconds": {m: s["seconds"] for m, s in summaries.items()},
                              "method": summary["method"], "final": summary["metrics"], "heldout": evaluation,
                              "baselines": {m: {"method": s["method"], "train_rows": int(s["metrics"]["train_rows"])}
                                            for m, s in baselines.items()}},
                       value={**summary, "heldout": evaluation, "baselines": baselines})


def generate_result(layout: RunLayout, users: list[dict], written: dict[str, dict], failures: dict[str, str],
                    clients: dict[str, ModelClient], warnings: list[str]) -> StageResult:
    """The generate stage's outcome over every method that generated."""
    gravity = clients[GRAVITY].backend.identity
    return StageResult(done=f"{sum(w['generations'] for w in written.values())} descriptions by {len(written)} "
                            f"methods", what="users' generations", total=len(users) * len(written),
                       artifacts={m if m != GRAVITY else "generations": layout.generations(m) for m in written},
                       rows={"generations": written[GRAVITY]["generations"],
                             **{f"{m}_generations": w["generations"] for m, w in written.items() if m != GRAVITY}},
                       failures=failures, clients=list(clients.values()), warnings=warnings,
                       notes={"model": gravity.model, "adapter": gravity.adapter,
                              "adapters": {m: c.backend.identity.adapter for m, c in clients.items()}})
