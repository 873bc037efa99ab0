"""Validation and normalisation of Amazon Reviews 2023 records (GRAVITY appendix A data).

Pure: takes decoded objects, returns a normalised row or the reason it is rejected.
Batches, line decoding and duplicates: `gravity_core.ingest_batch`.
Every record read ends up either as a row or as a quarantine row with a reason.
"""

from __future__ import annotations

import hashlib
import html
import math
import re
from collections.abc import Callable
from typing import Literal

import polars as pl

Kind = Literal["review", "book", "user"]
Validator = Callable[[object], "dict | str"]

REVIEW_SCHEMA = pl.Schema({
    "review_id": pl.String, "user_id": pl.String, "asin": pl.String, "parent_asin": pl.String,
    "rating": pl.Float64, "title": pl.String, "text": pl.String, "timestamp": pl.Int64,
    "helpful_vote": pl.Int64, "verified_purchase": pl.Boolean, "n_images": pl.Int64,
    "source_file": pl.String, "line_no": pl.Int64,
})
BOOK_SCHEMA = pl.Schema({
    "parent_asin": pl.String, "title": pl.String, "author": pl.String, "description": pl.String,
    "categories": pl.List(pl.String), "main_category": pl.String, "average_rating": pl.Float64,
    "rating_number": pl.Int64, "price": pl.Float64, "store": pl.String,
    "source_file": pl.String, "line_no": pl.Int64,
})
QUARANTINE_SCHEMA = pl.Schema({
    "source_file": pl.String, "kind": pl.String, "line_no": pl.Int64,
    "reason": pl.String, "raw_line": pl.String,
})
USER_SCHEMA = pl.Schema({"user_id": pl.String, "country": pl.String, "age": pl.Int64, "gender": pl.String})
PROVENANCE = {"source_file": pl.String, "line_no": pl.Int64}
# Rows as staged during ingest: users carry provenance until the final write.
ROW_SCHEMAS: dict[str, pl.Schema] = {
    "review": REVIEW_SCHEMA, "book": BOOK_SCHEMA, "user": pl.Schema({**USER_SCHEMA, **PROVENANCE}),
}
OUTPUT_COLUMNS: dict[str, list[str]] = {
    "review": list(REVIEW_SCHEMA), "book": list(BOOK_SCHEMA), "user": list(USER_SCHEMA),
}
DEDUP_KEYS: dict[str, str] = {"review": "review_id", "book": "parent_asin", "user": "user_id"}
AGE_RANGE = (10, 110)

_BR = re.compile(r"<br\b[^<>]*>", re.IGNORECASE)
_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]*)?/?>")
_PRICE = re.compile(r"^[^\d]{0,4}(\d[\d,]*(?:\.\d+)?)")
_NO_PRICE = {"", "none", "null", "nan", "-", "—", "n/a"}


class _Reject(Exception):
    """A record fails validation; the message is the quarantine reason."""


def clean_text(text: str) -> str:
    """HTML line breaks -> newline, other simple tags stripped, entities unescaped, trimmed."""
    if "<" in text:
        text = _TAG.sub("", _BR.sub("\n", text))
    if "&" in text:
        text = html.unescape(text)
    return text.strip()


def _opt_str(obj: dict, key: str, *, clean: bool = False) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Reject(f"{key} is not a string")
    return (clean_text(value) if clean else value.strip()) or None


def _req_str(obj: dict, key: str, *, clean: bool = False) -> str:
    if obj.get(key) is None:
        raise _Reject(f"missing {key}")
    value = _opt_str(obj, key, clean=clean)
    if value is None:
        raise _Reject(f"blank {key}")
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _opt_int(obj: dict, key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if not _is_number(value) or value != int(value):
        raise _Reject(f"{key} is not an integer")
    if not 0 <= value < 2**63:
        raise _Reject(f"{key} {int(value)} outside 0-2^63")
    return int(value)


def _opt_float(obj: dict, key: str, low: float, high: float) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if not _is_number(value):
        raise _Reject(f"{key} is not a number")
    if not low <= value <= high:
        raise _Reject(f"{key} {float(value)} outside {low:g}-{high:g}")
    return float(value)


def _opt_bool(obj: dict, key: str) -> bool | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, bool):
        raise _Reject(f"{key} is not a boolean")
    return value


def _str_list(obj: dict, key: str) -> list[str]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Reject(f"{key} is not a list of strings")
    return value


def _object(obj: object) -> dict:
    if not isinstance(obj, dict):
        raise _Reject("not a JSON object")
    return obj


def review_id(user_id: str, parent_asin: str, timestamp: int, text: str) -> str:
    """Stable short id of a review: hash of (user_id, parent_asin, timestamp, text)."""
    key = "\x1f".join((user_id, parent_asin, str(timestamp), text))
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def _review_row(obj: object) -> dict:
    obj = _object(obj)
    user_id = _req_str(obj, "user_id")
    text = _req_str(obj, "text", clean=True)
    parent_asin = _opt_str(obj, "parent_asin") or _opt_str(obj, "asin")
    if parent_asin is None:
        raise _Reject("missing parent_asin")
    if obj.get("rating") is None:
        raise _Reject("missing rating")
    rating = _opt_float(obj, "rating", 1, 5)
    if obj.get("timestamp") is None:
        raise _Reject("missing timestamp")
    timestamp = _opt_int(obj, "timestamp")
    images = obj.get("images")
    if images is not None and not isinstance(images, list):
        raise _Reject("images is not a list")
    return {
        "review_id": review_id(user_id, parent_asin, timestamp, text), "user_id": user_id,
        "asin": _opt_str(obj, "asin") or parent_asin, "parent_asin": parent_asin,
        "rating": rating, "title": _opt_str(obj, "title", clean=True), "text": text,
        "timestamp": timestamp, "helpful_vote": _opt_int(obj, "helpful_vote"),
        "verified_purchase": _opt_bool(obj, "verified_purchase"), "n_images": len(images or []),
    }


def _price(value: object) -> float | None:
    """Price as float: numbers pass, "$1,299.00" -> 1299.0, "$5 - $9" -> 5.0, empty markers -> None."""
    if value is None or _is_number(value):
        return None if value is None else float(value)
    if not isinstance(value, str):
        raise _Reject("price is not a number or string")
    if value.strip().lower() in _NO_PRICE:
        return None
    match = _PRICE.match(value.strip())
    if match is None:
        raise _Reject(f"price {value[:40]!r} is not a price")
    price = float(match.group(1).replace(",", ""))
    if not math.isfinite(price):  # 400 digits parse to inf
        raise _Reject(f"price {value[:40]!r} is out of range")
    return price


def _author(obj: dict) -> str | None:
    value = obj.get("author")
    if isinstance(value, dict):
        return _opt_str(value, "name")
    if value is None or isinstance(value, str):
        return _opt_str(obj, "author")
    raise _Reject("author is not an object")


def _description(obj: dict) -> str | None:
    value = obj.get("description")
    if isinstance(value, str):
        return _opt_str(obj, "description", clean=True)
    paragraphs = (clean_text(p) for p in _str_list(obj, "description"))
    return "\n".join(p for p in paragraphs if p) or None


def _book_row(obj: object) -> dict:
    obj = _object(obj)
    return {
        "parent_asin": _req_str(obj, "parent_asin"), "title": _req_str(obj, "title", clean=True),
        "author": _author(obj), "description": _description(obj),
        "categories": _str_list(obj, "categories"), "main_category": _opt_str(obj, "main_category"),
        "average_rating": _opt_float(obj, "average_rating", 0, 5),
        "rating_number": _opt_int(obj, "rating_number"), "price": _price(obj.get("price")),
        "store": _opt_str(obj, "store"),
    }


def _number_from_text(text: str) -> float | str | None:
    """CSV cells are text: blank -> None, "34" or "34.0" -> a number, else the text."""
    try:
        return float(text) if text.strip() else None
    except ValueError:
        return text


def _age(value: object) -> int | None:
    if isinstance(value, str):
        value = _number_from_text(value)
    if value is None:
        return None
    if not _is_number(value) or value != int(value):
        raise _Reject(f"age {value!r} is not an integer")
    if not AGE_RANGE[0] <= value <= AGE_RANGE[1]:
        raise _Reject(f"age {int(value)} outside {AGE_RANGE[0]}-{AGE_RANGE[1]}")
    return int(value)


def _user_row(obj: object) -> dict:
    obj = _object(obj)
    if None in obj:  # csv.DictReader puts surplus fields under the key None
        raise _Reject("row has more fields than the header")
    return {
        "user_id": _req_str(obj, "user_id"), "country": _opt_str(obj, "country"),
        "age": _age(obj.get("age")), "gender": _opt_str(obj, "gender"),
    }


def _run(build: Callable[[object], dict], obj: object) -> dict | str:
    try:
        return build(obj)
    except _Reject as reject:
        return str(reject)


def validate_review(obj: object) -> dict | str:
    """A REVIEW_SCHEMA row (without provenance) or the reason it is quarantined."""
    return _run(_review_row, obj)


def validate_book(obj: object) -> dict | str:
    """A BOOK_SCHEMA row (without provenance) or the reason it is quarantined."""
    return _run(_book_row, obj)


def validate_user(obj: object) -> dict | str:
    """A USER_SCHEMA row or the reason it is quarantined; blank age/gender stay null."""
    return _run(_user_row, obj)


VALIDATORS: dict[str, Validator] = {"review": validate_review, "book": validate_book, "user": validate_user}
