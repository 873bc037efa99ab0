"""Live progress of a run in this process: stages, items done / total, model calls, failures.

The stage wrapper and the fan-out report here; whoever watches (the CLI's console) subscribes.
Under a Prefect worker nobody subscribes and reporting costs a few dictionary updates.
"""
from __future__ import annotations

import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable

CURRENT_STAGE: ContextVar[str | None] = ContextVar("gravity_stage", default=None)


@dataclass
class StageProgress:
    """What one stage has done so far."""

    name: str
    started: float = field(default_factory=time.time)
    ended: float | None = None
    total: int | None = None
    done: int = 0
    failed: int = 0
    status: str = "running"
    clients: list = field(default_factory=list)

    @property
    def elapsed(self) -> float:
        return (self.ended or time.time()) - self.started

    def calls(self) -> tuple[int, int]:
        """(made, served from cache) by this stage's model clients so far."""
        stats = [c.stats() for c in self.clients]
        return sum(s["calls_made"] for s in stats), sum(s["calls_cached"] for s in stats)


Listener = Callable[[str, StageProgress, dict], None]


class Board:
    """Thread-safe progress of every stage run in this process, with event listeners."""

    def __init__(self):
        self._lock = threading.Lock()
        self.stages: dict[str, StageProgress] = {}
        self._listeners: list[Listener] = []

    def reset(self) -> None:
        """Forget earlier runs in this process (a new run starts with an empty board)."""
        with self._lock:
            self.stages = {}

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        self._listeners = [x for x in self._listeners if x is not listener]

    def _emit(self, event: str, stage: StageProgress, **detail) -> None:
        for listener in list(self._listeners):
            listener(event, stage, detail)

    def start(self, name: str) -> StageProgress:
        with self._lock:
            self.stages[name] = progress = StageProgress(name)
        self._emit("start", progress)
        return progress

    def get(self, name: str | None) -> StageProgress | None:
        return self.stages.get(name) if name else None

    def expect(self, name: str | None, total: int) -> None:
        """The number of items the stage will work through (users, seeds...)."""
        if (stage := self.get(name)) is not None:
            stage.total = (stage.total or 0) + total

    def advance(self, name: str | None, item: str, failure: str | None = None) -> None:
        if (stage := self.get(name)) is None:
            return
        with self._lock:
            stage.done += 1
            stage.failed += failure is not None
        if failure is not None:
            self._emit("item_failed", stage, item=item, reason=failure)

    def attach(self, name: str | None, client) -> None:
        if (stage := self.get(name)) is not None:
            stage.clients.append(client)

    def finish(self, name: str, status: str, **detail) -> None:
        stage = self.stages[name]
        stage.status, stage.ended = status, time.time()
        self._emit("finish", stage, **detail)


BOARD = Board()
