"""Ingest Amazon Reviews 2023 files into parquet (GRAVITY appendix A), quarantining bad records.

Plain I/O functions; validation lives in gravity_core.ingest. Large JSONL files are
streamed in batches to part files, de-duplicated with polars, then written atomically.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import os
import shutil
import tempfile
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import polars as pl
from pydantic import BaseModel

from gravity_core import ingest, ingest_batch
from gravity_core.banks import GenreTaxonomy
from gravity_core.cohort import assign_genres
from gravity_core.ingest import Kind
from gravity_core.ingest_batch import ParsedBatch
from gravity_core.layout import INGEST_FILES

OUTPUT_NAMES = INGEST_FILES


class KindCounts(BaseModel):
    """Counts for one kind of input; ingested + quarantined == lines_read."""

    lines_read: int
    ingested: int
    quarantined: int
    duplicates: int


class IngestSummary(BaseModel):
    """What ingest_files read and wrote."""

    reviews: KindCounts
    books: KindCounts
    users: KindCounts | None
    genres_version: str
    outputs: dict[str, Path]


def require_files(paths: list[Path]) -> list[Path]:
    """The paths, each checked to be a file (FileNotFoundError naming the first missing one)."""
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"input file not found: {path}")
    return paths


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of a .jsonl or .jsonl.gz file, streamed.

    Undecodable bytes are kept as surrogate escapes so the line is quarantined downstream.
    Raises FileNotFoundError at once, ValueError for a corrupt or truncated gzip stream.
    """
    path = Path(path)
    require_files([path])
    return _lines(path)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    line_no = 0
    try:
        with opener(path, "rb") as handle:
            for line_no, raw in enumerate(handle, 1):
                yield line_no, raw.decode("utf-8", "surrogateescape").rstrip("\r\n")
    except (EOFError, gzip.BadGzipFile) as err:
        raise ValueError(f"{path}: corrupt or truncated gzip after line {line_no}: {err}") from err


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    while chunk := list(islice(items, size)):
        yield chunk


def _parquet_records(path: Path, size: int) -> Iterator[list[tuple[int, dict]]]:
    lazy = pl.scan_parquet(path)
    stamps = [pl.col(c).dt.epoch("ms") for c, t in lazy.collect_schema().items()
              if c == "timestamp" and isinstance(t, pl.Datetime)]
    offset = 0
    for frame in lazy.with_columns(stamps).collect_batches(chunk_size=size):
        yield [(offset + i, row) for i, row in enumerate(frame.iter_rows(named=True), 1)]
        offset += frame.height


def _csv_records(path: Path) -> Iterator[tuple[int, dict | ingest_batch.Unreadable]]:
    """(line, row) per CSV record; a row the csv module rejects (a cell over its size limit, a
    NUL byte) is an `Unreadable` record for the quarantine and reading goes on after it."""
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        reader = csv.DictReader(handle)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                yield reader.reader.line_num, ingest_batch.Unreadable(f"unreadable CSV row: {err}")
                continue
            yield reader.line_num, row


def _batches(path: Path, kind: Kind, size: int) -> Iterator[tuple[ParsedBatch, int]]:
    """(validated batch, records read) for one input file; parquet, CSV or JSONL(.gz)."""
    if path.suffix == ".parquet":
        records = _parquet_records(path, size)
    elif path.suffix == ".csv":
        records = _chunks(_csv_records(path), size)
    else:
        for lines in _chunks(read_lines(path), size):
            n_read = sum(not ingest_batch.is_blank_line(text) for _, text in lines)
            yield ingest_batch.parse_jsonl_lines(lines, kind, path.name), n_read
        return
    for batch in records:
        yield ingest_batch.validate_records(batch, kind, path.name), len(batch)


def _write_part(rows: list[dict], schema: pl.Schema, path: Path) -> list[Path]:
    if not rows:
        return []
    pl.from_dicts(rows, schema=schema).write_parquet(path)
    return [path]


def _stage(paths: list[Path], kind: Kind, parts: Path, size: int) -> tuple[list[Path], list[Path], int]:
    """Validate inputs batch by batch into part files: (row parts, quarantine parts, records read)."""
    row_parts: list[Path] = []
    quarantine_parts: list[Path] = []
    n_read = 0
    for path in paths:
        for batch, n in _batches(path, kind, size):
            n_read += n
            stem = parts / f"{kind}-{n_read:012d}"
            row_parts += _write_part(batch.rows, ingest.ROW_SCHEMAS[kind], Path(f"{stem}-rows.parquet"))
            quarantine_parts += _write_part(batch.quarantine, ingest.QUARANTINE_SCHEMA,
                                            Path(f"{stem}-quarantine.parquet"))
    return row_parts, quarantine_parts, n_read


def _scan(parts: list[Path], schema: pl.Schema) -> pl.LazyFrame:
    return pl.scan_parquet(parts) if parts else pl.LazyFrame(schema=schema)


def _sink_temp(frame: pl.LazyFrame, parts: Path, name: str) -> Path:
    """Write under the staging folder; ingest_files renames it into out_dir (same filesystem)."""
    temp = parts / name
    frame.sink_parquet(temp)
    return temp


def _finalise(kind: Kind, row_parts: list[Path], parts: Path, taxonomy: GenreTaxonomy):
    """Stage the kind's parquet without later duplicates; return (staged, duplicates part, n duplicates)."""
    key = ingest.DEDUP_KEYS[kind]
    rows = _scan(row_parts, ingest.ROW_SCHEMAS[kind]).with_row_index("_pos")
    dups = ingest_batch.find_duplicates(rows.select("_pos", key, "source_file", "line_no"), key).collect()
    kept = rows.filter(~pl.col("_pos").is_in(dups["_pos"].implode())).drop("_pos")
    columns = ingest.OUTPUT_COLUMNS[kind]
    if kind == "book":
        kept, columns = assign_genres(kept, taxonomy), [*columns, "genre"]
    staged = _sink_temp(kept.select(columns), parts, OUTPUT_NAMES[kind])
    dup_rows = rows.filter(pl.col("_pos").is_in(dups["_pos"].implode())).join(
        dups.lazy(), on="_pos", maintain_order="left")
    dup_part = _sink_temp(ingest_batch.duplicates_to_quarantine(dup_rows, kind), parts, f"{kind}-duplicates.parquet")
    return staged, dup_part, dups.height


def _counts(kind: Kind, staged: Path, quarantine: pl.DataFrame, n_read: int, n_dups: int) -> KindCounts:
    """Counts read back from the staged files; raises if ingested + quarantined != read."""
    counts = KindCounts(
        lines_read=n_read, ingested=pl.scan_parquet(staged).select(pl.len()).collect().item(),
        quarantined=quarantine.filter(pl.col("kind") == kind)["n"].sum(), duplicates=n_dups,
    )
    if counts.ingested + counts.quarantined != counts.lines_read:
        raise RuntimeError(f"ingest invariant broken for {kind}: {counts}")
    return counts


def _as_list(paths: Path | list[Path] | None) -> list[Path]:
    if paths is None:
        return []
    return [Path(p) for p in paths] if isinstance(paths, (list, tuple)) else [Path(paths)]


def _ingest_kinds(inputs: dict, parts: Path, taxonomy: GenreTaxonomy, size: int):
    """Stage every kind and the quarantine; return (staged paths by name, counts by kind)."""
    staged: dict[str, Path] = {}
    quarantines: list[pl.LazyFrame] = []
    read: dict[str, tuple[int, int]] = {}
    for kind, paths in inputs.items():
        row_parts, quarantine_parts, n_read = _stage(paths, kind, parts, size)
        staged[OUTPUT_NAMES[kind]], dup_part, n_dups = _finalise(kind, row_parts, parts, taxonomy)
        quarantines.append(_scan([*quarantine_parts, dup_part], ingest.QUARANTINE_SCHEMA))
        read[kind] = (n_read, n_dups)
    quarantine = OUTPUT_NAMES["quarantine"]
    staged[quarantine] = _sink_temp(pl.concat(quarantines), parts, quarantine)
    per_kind = pl.scan_parquet(staged[quarantine]).group_by("kind").agg(n=pl.len()).collect()
    counts = {kind: _counts(kind, staged[OUTPUT_NAMES[kind]], per_kind, *read[kind]) for kind in inputs}
    return staged, counts


def ingest_files(
    reviews: Path | list[Path], meta: Path | list[Path], users: Path | None, out_dir: Path,
    taxonomy: GenreTaxonomy, batch_lines: int = 100_000,
) -> IngestSummary:
    """Validate reviews, book metadata and (optionally) users into out_dir parquet files.

    Writes reviews.parquet, books.parquet (with genre), users.parquet (when a users file is
    given) and quarantine.parquet, all or none. Raises FileNotFoundError for a missing input.
    """
    inputs: dict[str, list[Path]] = {"review": require_files(_as_list(reviews)), "book": require_files(_as_list(meta))}
    if users is not None:
        inputs["user"] = require_files(_as_list(users))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = Path(tempfile.mkdtemp(prefix=".ingest-parts-", dir=out_dir))
    try:
        staged, counts = _ingest_kinds(inputs, parts, taxonomy, batch_lines)
        for name, path in staged.items():
            os.replace(path, out_dir / name)
    finally:
        shutil.rmtree(parts, ignore_errors=True)
    return IngestSummary(
        reviews=counts["review"], books=counts["book"], users=counts.get("user"),
        genres_version=taxonomy.version, outputs={Path(n).stem: out_dir / n for n in staged},
    )


def main(argv: list[str] | None = None) -> None:
    """CLI: python -m tasks.ingest_io --reviews R.jsonl.gz --meta M.jsonl.gz --out DIR."""
    from tasks.bank_io import load_genre_taxonomy

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--reviews", nargs="+", type=Path, required=True)
    parser.add_argument("--meta", nargs="+", type=Path, required=True)
    parser.add_argument("--users", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--genres", type=Path, help="genre taxonomy YAML (default: bundled)")
    parser.add_argument("--batch-lines", type=int, default=100_000)
    args = parser.parse_args(argv)
    summary = ingest_files(args.reviews, args.meta, args.users, args.out,
                           load_genre_taxonomy(args.genres), args.batch_lines)
    print(summary.model_dump_json(indent=2))


if __name__ == "__main__":
    main()
