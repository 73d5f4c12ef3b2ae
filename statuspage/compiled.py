"""Queries the status page runs on every visit, built once per database.

Peewee spends about a millisecond turning a query into SQL — ten times what
SQLite then takes to answer it — so the page's few fixed-shape queries are
built once (per database: the parameter style differs) and run as raw
queries with fresh parameters. The rows still become models the usual way.
"""
from __future__ import annotations

import threading
import weakref

_built: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def run(model, name: str, build, *params):
    """`model.raw` of the SQL that `build()` makes (its parameters replaced by `params`)."""
    return model.raw(_sql(model, name, build), *params)


def first_row(model, name: str, build, *params) -> tuple | None:
    """The first row as a plain tuple: cheaper still, for the lookup on every visit."""
    return model._meta.database.execute_sql(_sql(model, name, build), params).fetchone()


def _sql(model, name: str, build) -> str:
    db = model._meta.database
    with _lock:
        queries = _built.setdefault(db, {})
        sql = queries.get(name)
        if sql is None:
            sql, _placeholders = build().sql()
            queries[name] = sql
        return sql
