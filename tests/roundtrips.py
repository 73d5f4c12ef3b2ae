"""Counting what a store sends its database: one `cursor.execute` is one
round trip (peewee runs PostgreSQL's connections in autocommit mode and sends
BEGIN, COMMIT and SAVEPOINT as statements of their own).

Used by bench/pg_roundtrips.py and tests/test_roundtrips.py.
"""
from __future__ import annotations

import collections
import contextlib
import threading


class _Counting:
    def __init__(self, cursor, seen):
        self._cursor, self._seen = cursor, seen

    def execute(self, sql, *args, **kwargs):
        self._seen(sql)
        return self._cursor.execute(sql, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._cursor, name)

    def __iter__(self):
        return iter(self._cursor)


class StatementCount:
    """Statements sent through `db` (all threads) while inside `counting()`."""

    def __init__(self, db):
        self.db = db
        self.statements: list[str] = []
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        return len(self.statements)

    def kinds(self) -> dict[str, int]:
        """How many of each kind (the SQL's first word, or BEGIN/COMMIT/SAVEPOINT/RELEASE)."""
        return dict(collections.Counter(sql.split(None, 1)[0].upper().rstrip(";") for sql in self.statements))

    def _seen(self, sql: str) -> None:
        with self._lock:
            self.statements.append(sql)

    @contextlib.contextmanager
    def counting(self):
        original = self.db.cursor

        def cursor(*args, **kwargs):
            return _Counting(original(*args, **kwargs), self._seen)
        self.db.cursor = cursor
        try:
            yield self
        finally:
            del self.db.cursor
