"""Mappings of the public TRAIT and Big5Chat releases (read from local files by the user)
onto GRAVITY's `PersonalityItem` record. Pure; column mappings in each function's docstring."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from gravity_core.banks import PersonalityItem, Reject, Trait


_TRAIT_ALIASES: dict[str, str] = {
    **{t: t for t in Trait.__args__}, "openness to experience": "openness",
    "extroversion": "extraversion", "o": "openness", "c": "conscientiousness",
    "e": "extraversion", "a": "agreeableness", "n": "neuroticism",
}


class _Unmappable(Exception):
    """A release row cannot become a PersonalityItem; the message is the reason."""


def _cell(row: object, key: str) -> str:
    if not isinstance(row, dict):
        raise _Unmappable("row is not an object")
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _Unmappable(f"missing {key}")
    return value.strip()


def _trait(name: str) -> str:
    trait = _TRAIT_ALIASES.get(name.strip().lower())
    if trait is None:
        raise _Unmappable(f"trait {name!r} is not a Big Five trait")
    return trait


def _item(prefix: str, source: str, style: str, trait: str, situation: str, high: str, low: str,
          ) -> PersonalityItem:
    digest = hashlib.sha256("\x1f".join((trait, situation, high, low)).encode()).hexdigest()[:12]
    return PersonalityItem(id=f"{prefix}-{digest}", trait=trait, style=style, situation=situation,
                           high_response=high, low_response=low, source=source)


def _trait_row(row: object) -> list[PersonalityItem]:
    trait = _trait(_cell(row, "personality"))
    situation = f"{_cell(row, 'situation')} {_cell(row, 'query')}"
    return [
        _item("trait", "trait", "scenario", trait, situation,
              _cell(row, f"response_high{k}"), _cell(row, f"response_low{k}"))
        for k in (1, 2)
    ]


def trait_rows_to_items(rows: Iterable[dict]) -> tuple[list[PersonalityItem], list[Reject]]:
    """TRAIT release rows (Lee et al. 2024) -> two scenario items per row, plus rejects.

    Column mapping: personality -> trait (Big Five names, case-insensitive; Dark Triad
    rows are rejected); situation + " " + query -> situation; (response_high1,
    response_low1) and (response_high2, response_low2) -> (high_response, low_response);
    style "scenario", source "trait", id "trait-<content hash>".
    Every row gives two items or one Reject (missing field, unknown trait, duplicate).
    """
    items: list[PersonalityItem] = []
    rejects: list[Reject] = []
    first_row: dict[str, int] = {}
    for row_no, row in enumerate(rows, 1):
        try:
            pair = _trait_row(row)
        except _Unmappable as err:
            rejects.append(Reject(row_no=row_no, reason=str(err)))
            continue
        if pair[0].id in first_row:
            rejects.append(Reject(row_no=row_no, reason=f"duplicate of row {first_row[pair[0].id]}"))
            continue
        first_row[pair[0].id] = row_no
        items.extend(pair)
    return items, rejects


def _big5chat_row(row: object) -> tuple[tuple[str, str], str, str]:
    trait = _trait(_cell(row, "trait"))
    level = _cell(row, "level").lower()
    if level not in ("high", "low"):
        raise _Unmappable(f"level {level!r} is not high or low")
    return (trait, _cell(row, "train_input")), level, _cell(row, "train_output")


def _pair_levels(groups: dict, rejects: list[Reject]) -> list[PersonalityItem]:
    items: dict[str, PersonalityItem] = {}
    for (trait, situation), levels in groups.items():
        highs, lows = levels["high"], levels["low"]
        for (h_no, high), (l_no, low) in zip(highs, lows):
            item = _item("b5c", "big5chat", "dialogue", trait, situation, high, low)
            if item.id in items:
                rejects += [Reject(row_no=n, reason="duplicate of an earlier pair") for n in (h_no, l_no)]
            items.setdefault(item.id, item)
        for row_no, _ in highs[len(lows):] + lows[len(highs):]:
            rejects.append(Reject(row_no=row_no, reason="no opposite-level response for this "
                                                       "train_input and trait"))
    return list(items.values())


def big5chat_rows_to_items(rows: Iterable[dict]) -> tuple[list[PersonalityItem], list[Reject]]:
    """Big5Chat release rows (Li et al. 2024) -> dialogue items, plus rejects.

    Column mapping: trait -> trait (case-insensitive); train_input (the other person's
    utterance) -> situation; train_output of a level "high" row -> high_response and of a
    level "low" row with the same (trait, train_input) -> low_response, the k-th high
    paired with the k-th low in row order; style "dialogue", source "big5chat".
    Every row is in exactly one item or one Reject: 2 * items + rejects == rows.
    """
    groups: dict[tuple[str, str], dict[str, list]] = {}
    rejects: list[Reject] = []
    for row_no, row in enumerate(rows, 1):
        try:
            key, level, output = _big5chat_row(row)
        except _Unmappable as err:
            rejects.append(Reject(row_no=row_no, reason=str(err)))
            continue
        groups.setdefault(key, {"high": [], "low": []})[level].append((row_no, output))
    items = _pair_levels(groups, rejects)
    return items, sorted(rejects, key=lambda r: r.row_no)
