"""Pure pieces of profile construction: context fitting, batching, schemas and parsers.

GRAVITY section 3.2 and appendix B. Model calls happen in `tasks.profiles`; everything
here turns inputs into prompts' inputs and model text into typed values (or a clear error).
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter

from gravity_core.fences import fence
from gravity_core.profile.config import ProfilesConfig
from gravity_core.profile.records import AGE_BINS, GENDERS, STANCES, TRAITS, Interests, UserInput, UserReview


def fit_reviews(reviews: tuple[UserReview, ...], cfg: ProfilesConfig) -> tuple[str, list[str]]:
    """Fit a review history into `review_token_budget` (estimated as chars / chars_per_token).

    Strategy: each review is cut to `max_review_chars`; reviews are taken newest first,
    round-robin across the user's genres (most reviewed genre first) so that a long history
    is sampled across all of the user's tastes; stop when the next review would overflow.
    Each review (its metadata line too: titles are stranger-written) is one fenced block
    `<<<REVIEW n>>>` ... `<<<END REVIEW n>>>` (gravity_core.fences), fences counted in the budget.
    Returns the rendered block and the review ids used (recorded as provenance).
    """
    budget = int(cfg.review_token_budget * cfg.review_chars_per_token)
    by_genre: dict[str, list[UserReview]] = {}
    for review in sorted(reviews, key=lambda r: (-r.timestamp, r.review_id)):
        by_genre.setdefault(review.genre, []).append(review)
    order = sorted(by_genre, key=lambda g: (-len(by_genre[g]), g))
    blocks, ids, used = [], [], 0
    for rank in range(max((len(v) for v in by_genre.values()), default=0)):
        for genre in order:
            if rank >= len(by_genre[genre]):
                continue
            block = fence(_render_review(by_genre[genre][rank], cfg.max_review_chars), f"REVIEW {len(ids) + 1}")
            if used + len(block) > budget:
                return "\n".join(blocks), ids
            blocks.append(block)
            ids.append(by_genre[genre][rank].review_id)
            used += len(block) + 1
    return "\n".join(blocks), ids


def _render_review(review: UserReview, max_chars: int) -> str:
    text = " ".join(review.text.split())
    if len(text) > max_chars:
        text = text[: max_chars - 3].rsplit(" ", 1)[0] + "..."
    title, book_title = " ".join(review.title.split()), " ".join(review.book_title.split())
    book = f' on "{book_title}"' if book_title else ""
    return f"[{review.rating:.0f}/5{book}, {review.genre}] {title}: {text}".replace(" : ", ": ")


def interests(user: UserInput, cfg: ProfilesConfig) -> Interests:
    """Genres covering >= `interest_threshold` of the user's reviews; top 3-5 (paper 3.2).

    When fewer than `min_interests` pass the threshold, the next most reviewed genres fill
    up to the minimum (a reader with 2 dominant genres still gets a third interest).
    """
    counts = Counter(r.genre for r in user.reviews if r.genre != "unmapped")
    total = sum(counts.values()) or 1
    ranked = sorted(counts, key=lambda g: (-counts[g], g))
    chosen = [g for g in ranked if counts[g] / total >= cfg.interest_threshold][: cfg.max_interests]
    for genre in ranked:
        if len(chosen) >= cfg.min_interests:
            break
        if genre not in chosen:
            chosen.append(genre)
    return Interests(user_id=user.user_id, genres=chosen,
                     shares={g: round(counts[g] / total, 4) for g in chosen})


def statement_rows(batch: list) -> list[dict[str, str]]:
    """The `statements` input of the values prompts: id and text of each seed in the batch."""
    return [{"id": s.id, "statement": s.statement} for s in batch]


def batches(items: list, size: int) -> list[list]:
    """Consecutive batches of `size`; ceil(len/size) of them."""
    return [items[i: i + size] for i in range(0, len(items), size)]


def expected_calls(n_seeds: int, batch_size: int) -> int:
    return math.ceil(n_seeds / batch_size)


def stance_schema(seed_ids: list[str]) -> dict:
    """JSON schema of a stance batch: one enum per seed id, all required, in order."""
    props = {sid: {"type": "string", "enum": list(STANCES)} for sid in seed_ids}
    return {"type": "object", "properties": {"stances": {
        "type": "object", "properties": props, "required": list(seed_ids), "additionalProperties": False}},
        "required": ["stances"], "additionalProperties": False}


def levels_schema() -> dict:
    props = {t: {"type": "string", "enum": ["high", "low"]} for t in TRAITS}
    return {"type": "object", "properties": props, "required": list(TRAITS), "additionalProperties": False}


def demographics_schema(fields: list[str]) -> dict:
    options = {"age_bin": list(AGE_BINS), "gender": list(GENDERS)}
    props = {f: {"type": "string", "enum": options[f]} for f in fields}
    return {"type": "object", "properties": props, "required": list(fields), "additionalProperties": False}


def extract_json_object(text: str) -> dict:
    """The first JSON object in `text` (models wrap JSON in prose or code fences)."""
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object in reply")
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} at char {exc.pos}") from exc
    if not isinstance(value, dict):
        raise ValueError("reply JSON is not an object")
    return value


def _norm_label(value: object) -> str:
    return re.sub(r"[\s_-]+", " ", str(value).strip().lower())


def parse_stances(text: str, seed_ids: list[str]) -> dict[str, str]:
    """Reply -> {seed_id: stance} for exactly the asked ids; a missing id or label is an error."""
    obj = extract_json_object(text)
    stances = obj.get("stances", obj)
    if not isinstance(stances, dict):
        raise ValueError("'stances' must be an object of seed id -> stance")
    missing = [sid for sid in seed_ids if sid not in stances]
    if missing:
        raise ValueError(f"missing stances for {missing}")
    result = {}
    for sid in seed_ids:
        label = _norm_label(stances[sid])
        if label not in STANCES:
            raise ValueError(f"stance for {sid} is {stances[sid]!r}; allowed: {list(STANCES)}")
        result[sid] = label
    return result


def parse_levels(text: str) -> dict[str, str]:
    """Reply -> {trait: high|low} for all five traits."""
    obj = extract_json_object(text)
    result = {}
    for trait in TRAITS:
        label = _norm_label(obj.get(trait, ""))
        if label not in ("high", "low"):
            raise ValueError(f"{trait} must be 'high' or 'low', got {obj.get(trait)!r}")
        result[trait] = label
    return result


def parse_demographics(text: str, fields: list[str]) -> dict[str, str]:
    """Reply -> the asked demographic fields with allowed labels."""
    obj = extract_json_object(text)
    allowed = {"age_bin": AGE_BINS, "gender": GENDERS}
    result = {}
    for field in fields:
        label = _norm_label(obj.get(field, "")).replace("middle aged", "middle-aged")
        if label not in allowed[field]:
            raise ValueError(f"{field} must be one of {list(allowed[field])}, got {obj.get(field)!r}")
        result[field] = label
    return result


def parse_summary(text: str, max_sentences: int) -> str:
    """Free-text summary, capped at `max_sentences`; empty text is an error."""
    clean = " ".join(text.replace("```", " ").split())
    if not clean:
        raise ValueError("empty summary")
    sentences = re.split(r"(?<=[.!?])\s+", clean)
    return " ".join(sentences[:max_sentences])
