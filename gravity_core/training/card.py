"""Pure helpers of the training stage: checkpoint choice, SFT config mapping, model card."""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
COMPLETE_MARKERS = ("trainer_state.json", "adapter_model.safetensors")


def last_complete_checkpoint(listing: dict[str, list[str]]) -> str | None:
    """The highest-step checkpoint folder whose files show a finished save.

    Takes {folder name: file names in it}. A save killed half-way lacks the trainer state or the
    adapter weights, so it is skipped rather than resumed from."""
    complete = [(int(m.group(1)), name) for name, files in listing.items()
                if (m := CHECKPOINT.match(name)) and all(f in files for f in COMPLETE_MARKERS)]
    return max(complete)[1] if complete else None


def sft_kwargs(dpo_config: Any, sft_fields: set[str]) -> dict[str, Any]:
    """The TrainingArguments-level settings of a DPO config that an SFTConfig also has."""
    values = {f.name: getattr(dpo_config, f.name) for f in dataclasses.fields(dpo_config) if f.init}
    return {k: v for k, v in values.items() if k in sft_fields}


def model_card(base_model: str, method: str, facets: dict[str, int], hyper: dict[str, Any],
               metrics: dict[str, Any], run_id: str, name: str = "gravity") -> str:
    """README.md for the adapter `name` (gravity or a trained baseline): base model, data by facet,
    hyperparameters, final metrics."""
    lines = [f"# {name} {method.upper()} adapter", "",
             "LoRA adapter trained by GRAVITY (profile-grounded synthetic preferences, Dey et al.)"
             + ("." if name == "gravity" else f"; the {name} baseline the paper compares with."), "",
             f"- base model: `{base_model}`", f"- method: {method}", f"- run: `{run_id}`", "",
             "## Training data (pairs per facet)", ""]
    lines += [f"- {facet}: {n}" for facet, n in sorted(facets.items())]
    lines += ["", "## Hyperparameters", "", "```json", json.dumps(hyper, indent=2, sort_keys=True, default=str),
              "```", "", "## Final metrics", "", "```json", json.dumps(metrics, indent=2, sort_keys=True, default=str),
              "```", ""]
    return "\n".join(lines)
