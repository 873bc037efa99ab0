"""Fixed phrasings (task prompts inside pairs, options, probes, re-asks) kept in one data file,
`prompts/phrasing/pairs.yaml`, instead of strings scattered through code."""
from __future__ import annotations

import yaml
from pydantic import BaseModel, ConfigDict, model_validator

PLACEHOLDERS = {"category_task": 0, "summary_task": 0, "value_task": 1, "dialogue_task": 1, "genre_option": 2,
                "book_option": 2, "stance_probe": 2, "reask": 1}


class Phrasing(BaseModel):
    """Each field is a text with a fixed number of positional `{}` placeholders."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    version: str
    category_task: str
    summary_task: str
    value_task: str
    dialogue_task: str
    genre_option: str
    book_option: str
    stance_probe: str
    reask: str

    @model_validator(mode="after")
    def _placeholders(self) -> "Phrasing":
        wrong = [f"{k} needs {n} '{{}}'" for k, n in PLACEHOLDERS.items() if getattr(self, k).count("{}") != n]
        if wrong:
            raise ValueError("; ".join(wrong))
        return self


def parse_phrasing(text: str) -> Phrasing:
    return Phrasing.model_validate(yaml.safe_load(text))
