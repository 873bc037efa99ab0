"""Request cache: SQLite keyed on `gravity_core.llm.request_key`.

Survives a killed process (each put is one committed transaction), is safe under threads
(one connection per thread, WAL, busy timeout) and lives at a stable path per recipe.

Switching a database to WAL takes an exclusive lock and SQLite does not wait on the busy
handler for it, so the switch and the schema are done once per process under a lock (with
a bounded retry against other processes doing the same); per-thread connections then only
open with a busy timeout.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from gravity_core.llm import ChatReply

_INIT_LOCK = threading.Lock()
_INIT_ATTEMPTS = 50

_SCHEMA = """CREATE TABLE IF NOT EXISTS replies (
  key TEXT PRIMARY KEY, backend TEXT, model TEXT, reply TEXT NOT NULL, created REAL)"""


class RequestCache:
    """Stored replies by request key."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        self._initialised = False

    def _initialise(self) -> None:
        """WAL mode (persistent in the file) and the table, once, before any thread connects."""
        with _INIT_LOCK:
            if self._initialised:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            for attempt in range(_INIT_ATTEMPTS):
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute(_SCHEMA)
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or attempt == _INIT_ATTEMPTS - 1:
                        raise
                    time.sleep(0.05 * (attempt + 1))
                finally:
                    conn.close()
            self._initialised = True

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self._initialise()
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # timeout = busy timeout
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def get(self, key: str) -> ChatReply | None:
        row = self._conn().execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return ChatReply.model_validate_json(row[0]) if row else None

    def put(self, key: str, reply: ChatReply, backend: str, model: str) -> None:
        self._conn().execute(
            "INSERT OR REPLACE INTO replies (key, backend, model, reply, created) VALUES (?, ?, ?, ?, ?)",
            (key, backend, model, reply.model_dump_json(), time.time()))

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM replies").fetchone()[0]


class NullCache:
    """A cache that stores nothing (for benchmarks of the raw backend)."""

    def get(self, key: str) -> ChatReply | None:
        return None

    def put(self, key: str, reply: ChatReply, backend: str, model: str) -> None:
        return None
