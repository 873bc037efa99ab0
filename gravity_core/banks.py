"""Knowledge banks: seed statements, personality items and the genre taxonomy (GRAVITY section 3).

Typed, frozen records and pure parsers; reading the files is done in tasks/bank_io.py.
"""

from __future__ import annotations

import hashlib
import json
import random
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Annotated, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from gravity_core.errors import describe_validation
from gravity_core.profile.records import Trait

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
SeedSource = Literal["hofstede", "schwartz", "wvs7"]
Topic = Literal["culture", "ethics", "society", "politics", "morals", "religion"]
Style = Literal["scenario", "dialogue"]
ItemSource = Literal["gravity-bank", "trait", "big5chat"]
T = TypeVar("T")


class BankError(ValueError):
    """A bank file is malformed; the message names the line (or entry) and the field."""


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# The bank's column is called `construct`, which shadows pydantic's deprecated
# BaseModel.construct(); harmless for a frozen record, so that one warning is silenced.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "construct"', category=UserWarning)

    class SeedStatement(_Record):
        """A value statement from Hofstede, Schwartz or WVS-7 that stances are elicited on."""

        id: Text
        source: SeedSource
        topic: Topic
        construct: Text
        statement: Text


class PersonalityItem(_Record):
    """A situation with a high-trait and a low-trait response (Big Five)."""

    id: Text
    trait: Trait
    style: Style
    situation: Text
    high_response: Text
    low_response: Text
    source: ItemSource = "gravity-bank"


class Genre(_Record):
    """A genre of the taxonomy; `match` holds Amazon category paths (without "Books")."""

    id: Text
    name: Text
    user_study: bool
    description: Text
    match: tuple[tuple[Text, ...], ...] = Field(min_length=1)


class GenreTaxonomy(_Record):
    """The versioned genre taxonomy; ids and match paths are unique."""

    version: Text
    genres: tuple[Genre, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> GenreTaxonomy:
        ids = Counter(g.id for g in self.genres)
        paths = Counter(p for g in self.genres for p in g.match)
        if dup := [i for i, n in ids.items() if n > 1]:
            raise ValueError(f"duplicate genre ids {dup}")
        if dup := [list(p) for p, n in paths.items() if n > 1]:
            raise ValueError(f"match paths listed twice {dup}")
        return self


class Reject(_Record):
    """A release row that could not be mapped onto a PersonalityItem."""

    row_no: int
    reason: str


def _describe(err: ValidationError) -> str:
    return describe_validation(err, unknown="field '{}': Extra inputs are not permitted", field="field '{}': {}")


def _parse_jsonl(text: str, model: type[T], what: str) -> list[T]:
    records: list = []
    first_line: dict[str, int] = {}
    for line_no, line in enumerate(text.lstrip("\ufeff").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = model.model_validate(json.loads(line))
        except ValueError as err:  # JSONDecodeError and ValidationError alike
            detail = _describe(err) if isinstance(err, ValidationError) else f"invalid JSON: {err}"
            raise BankError(f"{what} line {line_no}: {detail}") from None
        if record.id in first_line:
            raise BankError(f"{what} line {line_no}: field 'id': duplicate id {record.id!r} "
                            f"(first on line {first_line[record.id]})")
        first_line[record.id] = line_no
        records.append(record)
    return records


def parse_seed_statements(text: str) -> list[SeedStatement]:
    """seed_statements.jsonl -> records; errors name the line and field."""
    return _parse_jsonl(text, SeedStatement, "seed_statements")


def parse_personality_items(text: str) -> list[PersonalityItem]:
    """personality_items.jsonl -> records; errors name the line and field."""
    return _parse_jsonl(text, PersonalityItem, "personality_items")


def _yaml_line(text: str, loc: Sequence[str | int]) -> int | None:
    """1-based line of the deepest YAML node on the path `loc`."""
    node, line = yaml.compose(text), None
    for step in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == step), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
        else:
            break
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


def parse_genre_taxonomy(text: str) -> GenreTaxonomy:
    """genres.yaml -> GenreTaxonomy; errors name the line and field."""
    try:
        return GenreTaxonomy.model_validate(yaml.safe_load(text))
    except yaml.YAMLError as err:
        raise BankError(f"genres: invalid YAML: {err}") from None
    except ValidationError as err:
        first = err.errors()[0]["loc"]
        line = _yaml_line(text, first)
        where = f"genres line {line}" if line else "genres"
        raise BankError(f"{where}: {_describe(err)}") from None


def bank_version(text: str) -> str:
    """Short content hash of a bank file (line endings and BOM normalised)."""
    canonical = text.lstrip("\ufeff").replace("\r\n", "\n").encode("utf-8")
    return hashlib.sha256(canonical).hexdigest()[:12]


def _round_robin(groups: Sequence[Sequence[T]]) -> list[T]:
    longest = max((len(g) for g in groups), default=0)
    return [g[i] for i in range(longest) for g in groups if i < len(g)]


def _grouped(items: Iterable[T], key, rng: random.Random) -> list[list[T]]:
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    ordered = [groups[k] for k in sorted(groups)]
    rng.shuffle(ordered)
    for group in ordered:
        rng.shuffle(group)
    return ordered


def select_seeds(seeds: Sequence[SeedStatement], limit: int | None, seed: int,
                 include: Sequence[str] = ()) -> list[SeedStatement]:
    """A deterministic subset balanced across sources, then topics (round-robin); bank order kept.

    Ids in `include` are always kept (they count toward `limit`); unknown ids are an error."""
    unknown = sorted(set(include) - {s.id for s in seeds})
    if unknown:
        raise ValueError(f"unknown seed statement ids: {unknown}")
    if limit is None:
        return list(seeds)
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    rng = random.Random(seed)
    rest = [s for s in seeds if s.id not in set(include)]
    per_source = [
        _round_robin(_grouped(group, lambda s: s.topic, rng))
        for group in _grouped(rest, lambda s: s.source, rng)
    ]
    chosen = set(include) | {s.id for s in _round_robin(per_source)[: max(limit - len(include), 0)]}
    return [s for s in seeds if s.id in chosen]


def bank_summary(
    seeds: Sequence[SeedStatement], items: Sequence[PersonalityItem], taxonomy: GenreTaxonomy
) -> dict:
    """Counts for transparency: seeds by source/topic, items by trait/style, genres."""
    return {
        "seeds": {"total": len(seeds), "by_source": dict(Counter(s.source for s in seeds)),
                  "by_topic": dict(Counter(s.topic for s in seeds))},
        "items": {"total": len(items), "by_trait": dict(Counter(i.trait for i in items)),
                  "by_style": dict(Counter(i.style for i in items)),
                  "by_trait_style": dict(Counter(f"{i.trait}/{i.style}" for i in items))},
        "genres": {"version": taxonomy.version, "total": len(taxonomy.genres),
                   "user_study": sum(g.user_study for g in taxonomy.genres)},
    }
