"""The ledger: flushes write parts, a stage's end merges them into ledger.parquet, reads see both."""
from __future__ import annotations

import shutil

import polars as pl

from gravity_core.layout import RunLayout
from tasks.llm.ledger import Ledger, LedgerRow, compact, read_ledger


def _row(i: int) -> LedgerRow:
    return LedgerRow(run_id="r", stage="profiles", user_id=f"u{i}", backend="fake", model="m", prompt="p@1",
                     request_key=f"k{i}", input_tokens=i, ts=float(i))


def _flush(ledger: Ledger, rows: range) -> None:
    for i in rows:
        ledger.record(_row(i))
    ledger.flush()


def test_flushes_are_parts_until_compacted_and_every_read_sees_all_rows_once(tmp_path):
    layout, ledger = RunLayout.of(tmp_path), Ledger(tmp_path, "r")
    _flush(ledger, range(0, 3))
    _flush(ledger, range(3, 5))
    assert not layout.ledger.exists() and len(list(layout.ledger_parts.iterdir())) == 2
    assert read_ledger(tmp_path)["request_key"].to_list() == [f"k{i}" for i in range(5)]  # flush order
    assert compact(tmp_path) == 5
    assert layout.ledger.exists() and not list(layout.ledger_parts.iterdir())
    _flush(ledger, range(5, 6))
    assert read_ledger(tmp_path)["input_tokens"].to_list() == list(range(6))
    assert compact(tmp_path) == 1 and compact(tmp_path) == 0
    assert pl.read_parquet(layout.ledger).height == 6  # ledger.parquet alone is the whole ledger now


def test_a_flush_neither_reads_nor_rewrites_the_ledger_file(tmp_path):
    """Appending used to rewrite ledger.parquet at every flush (quadratic in a run's calls)."""
    layout, ledger = RunLayout.of(tmp_path), Ledger(tmp_path, "r")
    _flush(ledger, range(2))
    compact(tmp_path)
    good = layout.ledger.read_bytes()
    layout.ledger.write_bytes(b"not parquet")  # a flush that read it would fail
    before = layout.ledger.stat().st_mtime_ns
    _flush(ledger, range(2, 4))
    assert layout.ledger.stat().st_mtime_ns == before and layout.ledger.read_bytes() == b"not parquet"
    layout.ledger.write_bytes(good)
    assert read_ledger(tmp_path).height == 4


def test_a_compaction_killed_before_deleting_its_parts_counts_nothing_twice(tmp_path):
    layout, ledger = RunLayout.of(tmp_path), Ledger(tmp_path, "r")
    _flush(ledger, range(3))
    saved = tmp_path / "saved"
    shutil.copytree(layout.ledger_parts, saved)
    compact(tmp_path)
    shutil.copytree(saved, layout.ledger_parts, dirs_exist_ok=True)  # as if killed before the unlink
    _flush(ledger, range(3, 4))
    assert read_ledger(tmp_path).height == 4
    assert compact(tmp_path) == 1
    assert pl.read_parquet(layout.ledger)["request_key"].to_list() == ["k0", "k1", "k2", "k3"]


def test_a_ledger_written_before_parts_existed_is_read_and_extended(tmp_path):
    """Runs made by older versions have a ledger.parquet without the flush_id column."""
    layout = RunLayout.of(tmp_path)
    pl.DataFrame([_row(0).model_dump(exclude={"flush_id"})]).write_parquet(layout.ledger)
    _flush(Ledger(tmp_path, "r"), range(1, 2))
    assert compact(tmp_path) == 1
    assert read_ledger(tmp_path)["request_key"].to_list() == ["k0", "k1"]
