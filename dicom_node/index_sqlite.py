"""The ingest index rows on a SQLite file through the sqlite3 module directly.

Profiling the fast engine put SQLAlchemy's per-statement work (execution context, result
objects) at about 60 % of the Python time per received instance, for six small
statements. Here the same statements run as plain SQL on one sqlite3 connection per
thread, with the same pragmas (countyread.db: WAL, synchronous=FULL, busy timeout) and
timestamps bound by the very type SQLAlchemy uses (``UTCDateTime``), so the rows are
byte for byte what the SQLAlchemy path writes. PostgreSQL keeps the SQLAlchemy path.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable
from datetime import datetime
from functools import cache
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Engine

from countyread.db import UTCDateTime, _sqlite_pragmas

T = TypeVar("T")


class Rows(Protocol):
    """The statements one instance's index rows need, inside an open transaction."""

    def insert_study(self, values: dict[str, Any]) -> bool: ...

    def insert_series(self, values: dict[str, Any]) -> bool: ...

    def insert_instance(self, values: dict[str, Any]) -> bool: ...

    def series_owner(self, series_uid: str) -> tuple[str, str]: ...

    def delete_study(self, study_uid: str) -> None: ...

    def bump_series(self, series_uid: str, now: Any) -> None: ...

    def touch_study(self, study_uid: str, now: Any) -> None: ...

    def study_state(self, study_uid: str) -> tuple[str | None, str, str | None]: ...

    def update_study(self, study_uid: str, now: Any, mods: str, status: str,
                     reason: str | None) -> None: ...


@cache
def _insert_sql(table: str, keys: tuple[str, ...], pk: str) -> str:
    # Column names come from our own dicts (index.py), never from input.
    return (f"INSERT INTO {table} ({', '.join(keys)}) VALUES "
            f"({', '.join(':' + k for k in keys)}) ON CONFLICT DO NOTHING RETURNING {pk}")


_BUMP_SERIES = (
    "UPDATE series SET instance_count = instance_count + 1, last_received_at = ?, "
    "generation = generation + CASE WHEN state = 'stable' THEN 1 ELSE 0 END, "
    "state = 'receiving', stable_at = NULL WHERE series_uid = ?"
)


class _Sqlite3Rows:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def _insert(self, table: str, values: dict[str, Any], pk: str) -> bool:
        sql = _insert_sql(table, tuple(values), pk)
        return bool(self.conn.execute(sql, values).fetchall())

    def insert_study(self, values: dict[str, Any]) -> bool:
        return self._insert("studies", values, "study_uid")

    def insert_series(self, values: dict[str, Any]) -> bool:
        return self._insert("series", values, "series_uid")

    def insert_instance(self, values: dict[str, Any]) -> bool:
        return self._insert("instances", values, "sop_instance_uid")

    def series_owner(self, series_uid: str) -> tuple[str, str]:
        ((owner, state),) = self.conn.execute(
            "SELECT study_uid, state FROM series WHERE series_uid = ?", (series_uid,)
        ).fetchall()
        return str(owner), str(state)

    def delete_study(self, study_uid: str) -> None:
        self.conn.execute("DELETE FROM studies WHERE study_uid = ?", (study_uid,))

    def bump_series(self, series_uid: str, now: Any) -> None:
        self.conn.execute(_BUMP_SERIES, (now, series_uid))

    def touch_study(self, study_uid: str, now: Any) -> None:
        self.conn.execute("UPDATE studies SET last_received_at = ? WHERE study_uid = ?",
                          (now, study_uid))

    def study_state(self, study_uid: str) -> tuple[str | None, str, str | None]:
        ((mods, status, reason),) = self.conn.execute(
            "SELECT modalities, status, reason FROM studies WHERE study_uid = ?", (study_uid,)
        ).fetchall()
        return mods, str(status), reason

    def update_study(self, study_uid: str, now: Any, mods: str, status: str,
                     reason: str | None) -> None:
        self.conn.execute(
            "UPDATE studies SET last_received_at = ?, modalities = ?, status = ?, reason = ? "
            "WHERE study_uid = ?", (now, mods, status, reason, study_uid))


class SqliteRows:
    """Per-thread sqlite3 connections to one database file."""

    def __init__(self, path: str, bind_ts: Callable[[datetime], Any]) -> None:
        self.path = path
        self._bind_ts = bind_ts
        self._local = threading.local()

    @classmethod
    def for_engine(cls, engine: Engine) -> SqliteRows | None:
        """For a SQLite file engine; None for other databases (and in-memory SQLite)."""
        if engine.dialect.name != "sqlite":
            return None
        path = engine.url.database
        if not path or path == ":memory:" or path.startswith("file:"):
            return None
        bind = UTCDateTime().dialect_impl(engine.dialect).bind_processor(engine.dialect)
        return cls(path, bind if bind is not None else (lambda v: v))

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so the write lock
            # is taken up front (as index.py explains for the SQLAlchemy path).
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            _sqlite_pragmas(conn, None)
            self._local.conn = conn
        return conn

    def precheck(self, sop_uid: str, series_uid: str
                 ) -> tuple[tuple[str, int] | None, str | None]:
        """(path and size of a stored copy, owning study of the series)."""
        conn = self._conn()
        rows = conn.execute("SELECT path, size_bytes FROM instances WHERE sop_instance_uid = ?",
                            (sop_uid,)).fetchall()
        if rows:
            return (str(rows[0][0]), int(rows[0][1])), None
        owner = conn.execute("SELECT study_uid FROM series WHERE series_uid = ?",
                             (series_uid,)).fetchall()
        return None, (str(owner[0][0]) if owner else None)

    def transaction(self, fn: Callable[[Rows, Any], T], now: datetime) -> T:
        """Run ``fn(rows, now as bound)`` in one transaction; commit (one log fsync)."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            out = fn(_Sqlite3Rows(conn), self._bind_ts(now))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return out
