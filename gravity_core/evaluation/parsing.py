"""The judge's replies (GRAVITY appendix D.3): a ranking of labelled descriptions, a 1-5 score.

The judge sees each candidate description under a neutral id (A, B, C, ... or 1, 2, 3, ...),
never under a method name. Parsing is strict: anything but the exact requested JSON is a
`ValueError` whose message can be sent back to the model as a re-ask.
"""
from __future__ import annotations

import json
import re
import string

SCORE_VALUES = (1, 2, 3, 4, 5)
_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL)


def candidate_ids(n: int, style: str = "letters") -> list[str]:
    """The ids shown to the judge for n candidates: "A".."Z" (letters) or "1".."n" (numbers)."""
    if n < 1:
        raise ValueError("need at least one candidate")
    if style == "numbers":
        return [str(i + 1) for i in range(n)]
    if style != "letters":
        raise ValueError(f"unknown id style {style!r}; use 'letters' or 'numbers'")
    if n > len(string.ascii_uppercase):
        raise ValueError(f"{n} candidates exceed the 26 letter ids; use style='numbers'")
    return list(string.ascii_uppercase[:n])


def ranking_schema(ids: list[str]) -> dict:
    """JSON schema of the ranking reply: {"ranking": [every id once, best first]}.

    Fixed-length array of distinct id enums, walkable by `gravity_core.guided` (which honours
    `uniqueItems` over an enum, so guided decoding writes a permutation); `parse_ranking` still
    checks it for replies that were not guided.
    """
    return {"type": "object",
            "properties": {"ranking": {"type": "array", "items": {"enum": list(ids)},
                                       "minItems": len(ids), "maxItems": len(ids), "uniqueItems": True}},
            "required": ["ranking"], "additionalProperties": False}


def score_schema() -> dict:
    """JSON schema of the interestingness reply: {"score": 1..5} (an enum: guided decoding has no integers)."""
    return {"type": "object", "properties": {"score": {"enum": list(SCORE_VALUES)}},
            "required": ["score"], "additionalProperties": False}


def _json_reply(text: str, key: str, example: str) -> object:
    """The value under `key` of a reply that is exactly one JSON object with that one key."""
    body = text.strip()
    fenced = _FENCE.match(body)
    body = fenced.group(1).strip() if fenced else body
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        raise ValueError(f"the reply is not JSON; reply with only a JSON object like {example}") from None
    if not isinstance(data, dict) or set(data) != {key}:
        raise ValueError(f'the reply must be a JSON object with the single key "{key}", like {example}')
    return data[key]


def parse_ranking(text: str, candidate_ids: list[str]) -> list[str]:
    """The judge's ranking (paper D.3) as candidate ids, best first; a full permutation or ValueError.

    Accepts only {"ranking": [...]} (optionally inside one ```json fence) listing every id once.
    """
    expected = list(candidate_ids)
    example = json.dumps({"ranking": expected})
    ranking = _json_reply(text, "ranking", example)
    if not isinstance(ranking, list) or not all(isinstance(i, str) for i in ranking):
        raise ValueError(f'"ranking" must be a list of id strings, like {example}')
    ranking = [i.strip() for i in ranking]
    problems = []
    duplicates = sorted({i for i in ranking if ranking.count(i) > 1})
    unknown = [i for i in ranking if i not in expected]
    missing = [i for i in expected if i not in ranking]
    if duplicates:
        problems.append(f"ids listed more than once: {duplicates}")
    if unknown:
        problems.append(f"unknown ids: {unknown}")
    if missing:
        problems.append(f"missing ids: {missing}")
    if problems:
        raise ValueError('the "ranking" list is not a full ranking: ' + "; ".join(problems)
                         + f". List every id of {expected} exactly once, best first, like {example}")
    return ranking


def parse_score(text: str) -> int:
    """The judge's interestingness score (paper D.3, 1-5 Likert): {"score": n} or the bare integer."""
    example = '{"score": 4}'
    body = text.strip()
    value = int(body) if re.fullmatch(r"[1-5]", body) else _json_reply(body, "score", example)
    if isinstance(value, bool) or not isinstance(value, int) or value not in SCORE_VALUES:
        raise ValueError(f'"score" must be one whole number from 1 to 5, like {example}')
    return value


def ids_to_methods(ranking: list[str], ids: list[str], methods: list[str]) -> list[str]:
    """Translate a ranking of shown ids back to method names (ids[i] was shown for methods[i])."""
    if len(ids) != len(methods):
        raise ValueError("ids and methods differ in length")
    lookup = dict(zip(ids, methods, strict=True))
    return [lookup[i] for i in ranking]
