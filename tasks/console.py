"""The run as a person watches it: a live table of stages (items done / total, model calls made
and cached, elapsed) while it runs, one line per tolerated failure or warning, and a summary
table at the end. Built on rich; fed by `tasks.progress.BOARD`."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.live import Live
from rich.table import Table

from tasks.progress import BOARD, StageProgress

STYLE = {"running": "cyan", "completed": "green", "partial": "yellow", "failed": "red", "cached": "blue"}


def progress_table(stages: dict[str, StageProgress]) -> Table:
    table = Table(title="GRAVITY", title_justify="left", expand=False)
    for column in ("stage", "status", "items", "calls made", "cached", "elapsed"):
        table.add_column(column, justify="left" if column in ("stage", "status") else "right")
    for stage in list(stages.values()):
        made, cached = stage.calls()
        items = f"{stage.done}/{stage.total}" if stage.total else (str(stage.done) if stage.done else "-")
        table.add_row(stage.name, f"[{STYLE.get(stage.status, 'white')}]{stage.status}[/]", items, str(made),
                      str(cached), f"{stage.elapsed:.0f}s")
    return table


def _short(reason: str) -> str:
    return " ".join(str(reason).split())[:160]


def _by_reason(failures: dict[str, str]) -> dict[str, list[str]]:
    """Items grouped by their (shortened) failure reason: a systemic failure, such as an endpoint
    rejecting the key, is one line rather than one per user."""
    grouped: dict[str, list[str]] = {}
    for item, reason in failures.items():
        grouped.setdefault(_short(reason), []).append(item)
    return grouped


class RunConsole:
    """Live progress plus the one-line notices of a run."""

    def __init__(self, stream=None):
        stream = stream or sys.stdout
        self.console = Console(file=stream, width=None if stream.isatty() else 140,
                               force_terminal=stream.isatty() or None)

    def _notice(self, event: str, stage: StageProgress, detail: dict) -> None:
        if event != "finish":
            return
        where = f" (raw output: {detail['quarantine']})" if detail.get("quarantine") else ""
        for reason, items in _by_reason(detail.get("failures") or {}).items():
            who = items[0] if len(items) == 1 else f"{len(items)} items ({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})"
            self.console.print(f"[yellow]![/] {stage.name}: {who} failed: {reason}{where}", highlight=False, soft_wrap=True)
        for warning in detail.get("warnings") or []:
            self.console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
        if detail.get("reason"):
            self.console.print(f"[red]{stage.name} failed:[/] {_short(detail['reason'])}", highlight=False, soft_wrap=True)

    @contextmanager
    def live(self):
        BOARD.reset()
        BOARD.subscribe(self._notice)
        try:
            with Live(get_renderable=lambda: progress_table(BOARD.stages), console=self.console,
                      refresh_per_second=2, transient=self.console.is_terminal):
                yield self
            if not self.console.is_terminal:
                self.console.print()
        finally:
            BOARD.unsubscribe(self._notice)

    def summary(self, result: dict) -> None:
        """The stages of the run and where their artifacts are."""
        table = Table(title=f"run {result['run_dir']}", title_justify="left")
        for column in ("stage", "status", "seconds", "calls made", "cached", "failed", "artifacts"):
            table.add_column(column)
        for name, stage in result["stages"].items():
            table.add_row(name, f"[{STYLE.get(stage['status'], 'white')}]{stage['status']}[/]", f"{stage['seconds']:.1f}",
                          str(stage["model_calls"]["made"]), str(stage["model_calls"]["cached"]),
                          str(stage["failures"]), stage["folder"])
        self.console.print(table)
        self.console.print(f"manifest: {result['manifest']}\nlogs: {result['logs']}", highlight=False, soft_wrap=True)


def frame_table(title: str, frame: pl.DataFrame) -> Table:
    """A polars frame as a rich table (every row and column)."""
    table = Table(title=title, title_justify="left")
    for column in frame.columns:
        table.add_column(column, justify="right" if frame.schema[column].is_numeric() else "left")
    for row in frame.iter_rows():
        table.add_row(*("" if v is None else str(v) for v in row))
    return table


@contextmanager
def captured_output(log: Path):
    """Route everything written to this process's stdout and stderr (library progress bars and
    warnings, a temporary Prefect server started meanwhile) to `log`; yields a text stream on the
    real stdout for what a person should see."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    visible = os.fdopen(os.dup(saved[0]), "w", buffering=1, encoding="utf-8")
    with open(log, "ab") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield visible
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            visible.close()
