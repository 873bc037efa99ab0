"""Reading bundled package data (prompts, banks, sample cohort) and 'package:' paths."""
from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

from gravity_core.phrasing import Phrasing, parse_phrasing
from gravity_core.prompts import PromptTemplate, parse_prompt
from gravity_core.recipe import PACKAGE_PREFIX

_DATA = resources.files("gravity_core") / "data"
_PROMPTS = resources.files("gravity_core") / "prompts"


def resolve_path(path: str) -> Path:
    """'package:sample/Books.jsonl' -> the bundled file; anything else is a filesystem path."""
    if path.startswith(PACKAGE_PREFIX):
        return Path(str(_DATA / path[len(PACKAGE_PREFIX):]))
    return Path(path).expanduser()


def prompt_names() -> list[str]:
    return sorted(p.name[:-5] for p in _PROMPTS.iterdir() if p.name.endswith(".yaml"))


def prompt_file(name: str) -> Path:
    return Path(str(_PROMPTS / f"{name}.yaml"))


def phrasing_file() -> Path:
    return Path(str(_PROMPTS / "phrasing" / "pairs.yaml"))


@lru_cache(maxsize=None)
def load_prompt(name: str) -> PromptTemplate:
    """The bundled prompt template `name` (file prompts/<name>.yaml)."""
    file = prompt_file(name)
    return parse_prompt(file.read_text(encoding="utf-8"), source=str(file))


def prompt_versions(names: tuple[str, ...] | list[str]) -> dict[str, str]:
    """{prompt name: version} for provenance records."""
    return {name: load_prompt(name).version for name in names}


@lru_cache(maxsize=None)
def load_phrasing() -> Phrasing:
    """The bundled fixed phrasings (prompts/phrasing/pairs.yaml)."""
    return parse_phrasing(phrasing_file().read_text(encoding="utf-8"))
