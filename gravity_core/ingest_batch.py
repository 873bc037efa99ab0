"""Batches of Amazon Reviews 2023 records: line decoding (BOM, CRLF, blank lines, bad JSON),
validation into rows or quarantine rows, and duplicate detection across batches and files.

Pure; the validators themselves live in `gravity_core.ingest`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import polars as pl

from gravity_core.ingest import VALIDATORS, Kind


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _clean_source(raw: str | None) -> bool:
    """True when raw text cannot yield lone surrogates (no bad bytes, no \\udXXX escapes)."""
    if raw is None or "\\ud" in raw or "\\uD" in raw:
        return False
    return raw.isascii() or _encodable(raw)


def _row_encodable(row: dict) -> bool:
    """False when a kept string holds undecodable bytes (lone surrogates)."""
    return all(_encodable(v) for v in row.values() if isinstance(v, str) and not v.isascii())


def _safe(text: str) -> str:
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True)
class Unreadable:
    """A record the file reader could not decode (e.g. a CSV row with a cell over the size
    limit): quarantined with `reason`, never a crash."""

    reason: str


@dataclass
class ParsedBatch:
    """Rows and quarantine rows from one batch of one source file."""

    kind: Kind
    source_file: str
    rows: list[dict] = field(default_factory=list)
    quarantine: list[dict] = field(default_factory=list)

    def reject(self, line_no: int, reason: str, raw: str) -> None:
        self.quarantine.append({"source_file": self.source_file, "kind": self.kind,
                                "line_no": line_no, "reason": reason, "raw_line": _safe(raw)})

    def add(self, line_no: int, obj: object, raw: str | None = None) -> None:
        """Validate one decoded record; raw is its source text (JSON of obj when None)."""
        if isinstance(obj, Unreadable):
            self.reject(line_no, obj.reason, "")
            return
        out = VALIDATORS[self.kind](obj)
        if isinstance(out, dict) and not _clean_source(raw) and not _row_encodable(out):
            out = "invalid UTF-8 in a kept field"
        if isinstance(out, str):
            self.reject(line_no, out, raw if raw is not None else json.dumps(obj, default=str))
            return
        out["source_file"], out["line_no"] = self.source_file, line_no
        self.rows.append(out)


def is_blank_line(line: str) -> bool:
    """Blank lines (BOM and whitespace only) are skipped and not counted as read."""
    return not line.lstrip("\ufeff").strip()


def parse_jsonl_lines(lines: Iterable[tuple[int, str]], kind: Kind, source_file: str) -> ParsedBatch:
    """Decode and validate (line_no, text) pairs; BOM, CRLF and blank lines handled."""
    batch = ParsedBatch(kind, source_file)
    for line_no, line in lines:
        line = line.lstrip("\ufeff").rstrip("\r\n")
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as err:  # JSONDecodeError and lone-surrogate errors alike
            batch.reject(line_no, f"invalid JSON: {err}", line)
            continue
        except RecursionError:  # '[[[[...' thousands deep: the decoder recurses per level
            batch.reject(line_no, "invalid JSON: nested too deeply", line)
            continue
        batch.add(line_no, obj, line)
    return batch


def validate_records(records: Iterable[tuple[int, object]], kind: Kind, source_file: str) -> ParsedBatch:
    """Validate already-decoded (line_no, record) pairs, e.g. parquet or CSV rows."""
    batch = ParsedBatch(kind, source_file)
    for line_no, obj in records:
        batch.add(line_no, obj)
    return batch


def find_duplicates(keys: pl.LazyFrame, key: str) -> pl.LazyFrame:
    """Later copies of a key, in read order.

    Takes: _pos (read order), <key>, source_file, line_no. Returns: _pos, reason.
    """
    firsts = keys.group_by(key).agg(pl.col("_pos").min().alias("_first"))
    origin = keys.select(pl.col("_pos").alias("_first"), pl.col("line_no").alias("_first_line"),
                         pl.col("source_file").alias("_first_file"))
    later = keys.join(firsts, on=key).filter(pl.col("_pos") != pl.col("_first"))
    reason = pl.format("duplicate of line {}", pl.col("_first_line"))
    same_file = pl.col("source_file") == pl.col("_first_file")
    return later.join(origin, on="_first").sort("_pos").select(
        "_pos", pl.when(same_file).then(reason).otherwise(pl.format("{} in {}", reason, "_first_file"))
        .alias("reason"))


def duplicates_to_quarantine(rows: pl.LazyFrame, kind: Kind) -> pl.LazyFrame:
    """Quarantine rows for duplicates; raw_line is the JSON of the normalised row.

    Takes: source_file, line_no, reason, row columns. Returns: QUARANTINE_SCHEMA columns.
    """
    data = [c for c in rows.collect_schema() if c not in {"_pos", "reason", "source_file", "line_no"}]
    return rows.select(
        "source_file", pl.lit(kind).alias("kind"), pl.col("line_no").cast(pl.Int64), "reason",
        pl.struct(data).struct.json_encode().alias("raw_line"),
    )
