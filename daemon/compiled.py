"""Statements built once per database: the hot paths' SQL without peewee's building cost.

Peewee spends 0.1–1 ms turning a query object into SQL text — up to ten
times what SQLite then takes to answer it — and a customer reply or a
status-page visit runs a handful of fixed-shape statements. So each is built
by peewee once per database (the parameter style, ? or %s, and RETURNING
differ between SQLite and PostgreSQL), kept here, and run as raw SQL with
fresh parameters. The rows still become models the usual way.

SELECTs (`run`, `get`, `every`, `first_row`, `rows`, `exists`): `build()` makes the peewee
query with stand-in values where the parameters go, and `params` are the
real values in the order of peewee's placeholders (their number is checked).
They go to the driver as given: ids for foreign keys, plain str, int and
datetime — what the field's db_value would make of them. `name` is unique
per model. `build` runs once per database: the SQL it makes may depend on
the backend (FOR UPDATE on PostgreSQL only), on nothing else it captures.

Writes (`insert`, `create`, `update`, `save_dirty`) need no `build`: their
SQL follows from the model and the set of columns, and values are converted
by each field's db_value exactly as `Model.create` / `save` do.

Threads share the cache (peewee's connections are per thread, SQL text is
not); a lock guards it, and it goes with its database object.
"""
from __future__ import annotations

import threading
import weakref

import peewee as pw

_built: "weakref.WeakKeyDictionary[pw.Database, dict]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


# ---- SELECTs ---------------------------------------------------------------

def run(model, name, build, *params):
    """`model.raw` of the SQL that `build()` makes: its rows as model instances."""
    return model.raw(_select(model, name, build, params)[0], *params)


def get(model, name, build, *params):
    """The first row as a `model` instance, or None (like `query.first()`);
    `build()` selects fields of `model` only (`model.select()`: all of them)."""
    sql, fields = _own_fields(model, name, build, params)
    row = model._meta.database.execute_sql(sql, params).fetchone()
    return None if row is None else _instance(model, fields, row)


def every(model, name, build, *params) -> list:
    """All rows as `model` instances (`list(query)`), with the same rule as `get`."""
    sql, fields = _own_fields(model, name, build, params)
    return [_instance(model, fields, row) for row in model._meta.database.execute_sql(sql, params).fetchall()]


def _own_fields(model, name, build, params):
    sql, fields = _select(model, name, build, params)
    if fields is None:
        raise TypeError(f"{name}: needs a query of {model.__name__}'s own fields")
    return sql, fields


def _instance(model, fields, row):
    instance = model(__no_default__=True)   # as peewee makes one of a row: no defaults, nothing dirty
    instance.__data__ = {field.name: field.python_value(value) for field, value in zip(fields, row)}
    return instance


def first_row(model, name, build, *params) -> tuple | None:
    """The first row as a plain tuple: cheaper still, when no model is needed."""
    sql, _fields = _select(model, name, build, params)
    return model._meta.database.execute_sql(sql, params).fetchone()


def rows(model, name, build, *params) -> list[tuple]:
    """All rows as plain tuples (for InboundMessage too, whose `raw` field hides `model.raw`)."""
    sql, _fields = _select(model, name, build, params)
    return model._meta.database.execute_sql(sql, params).fetchall()


def exists(model, name, build, *params) -> bool:
    """Whether `build()`'s query finds a row (`query.exists()`: SELECT EXISTS(…))."""
    row = first_row(model, ("exists", name), lambda: pw.Select(columns=[pw.fn.EXISTS(_select_one(build()))]),
                    *params)
    return bool(row[0])


def _select_one(query):
    # as ModelSelect.exists: SELECT 1 when no columns were chosen
    return query.select(pw.SQL("1")) if getattr(query, "_is_default", False) else query


def _select(model, name, build, params) -> tuple[str, tuple | None]:
    db = model._meta.database

    def make():
        query = build()
        sql, stand_ins = db.get_sql_context().sql(query).query()
        columns = getattr(query, "_returning", None) or ()
        own = all(isinstance(c, pw.Field) and c.model is model for c in columns)
        return sql, len(stand_ins), (tuple(columns) if columns and own else None)

    sql, count, fields = _statement(db, (model, name), make)
    if len(params) != count:
        raise TypeError(f"{name}: the statement takes {count} parameters, {len(params)} given")
    return sql, fields


# ---- writes ----------------------------------------------------------------

def insert(model, **values):
    """INSERT one row as `model.create(**values)` would (the model's defaults
    filled in, each value through its field's db_value); returns its id
    (the primary key on PostgreSQL, the rowid on SQLite, as peewee)."""
    data = model._meta.get_default_dict()
    data.update(values)
    return _insert(model, data)


def create(model, **values):
    """`model.create(**values)` with the INSERT built once: the saved instance."""
    instance = model(**values)
    data = instance.__data__.copy()
    instance._populate_unsaved_relations(data)   # as Model.save: a related row saved since
    key = _insert(model, data)
    if model._meta.auto_increment and instance._pk is None:
        instance._pk = key
    instance._dirty.clear()
    return instance


def update(model, pk, **values) -> int:
    """UPDATE just these columns of the row with primary key `pk`; the rows changed."""
    db = model._meta.database
    sql, fields = _statement(db, ("update", model, frozenset(values)), lambda: _build_update(db, model, values))
    pk_field = model._meta.primary_key
    params = [pk_field.db_value(pk) if field is None else field.db_value(values[field.name]) for field in fields]
    return db.rows_affected(db.execute_sql(sql, params))


def save_dirty(instance) -> int:
    """Save only the fields assigned since the instance was loaded or saved
    (peewee's dirty set; a dict or list changed in place is not seen)."""
    values = {name: instance.__data__.get(name) for name in instance._dirty}
    values.pop(instance._meta.primary_key.name, None)
    instance._dirty.clear()
    return update(type(instance), instance._pk, **values) if values else 0


def _insert(model, data: dict):
    meta = model._meta
    if meta.auto_increment and data.get(meta.primary_key.name) is None:
        data.pop(meta.primary_key.name, None)   # the database numbers the row
    db = meta.database
    sql, fields = _statement(db, ("insert", model, frozenset(data)), lambda: _build_insert(db, model, data))
    cursor = db.execute_sql(sql, [field.db_value(data[field.name]) for field in fields])
    # PostgreSQL: INSERT … RETURNING the key (peewee adds it); SQLite: the rowid
    return cursor.fetchone()[0] if db.returning_clause else cursor.lastrowid


def _build_insert(db, model, data):
    fields = _fields(model, data)
    query = model.insert_many([[_stand_in(i) for i in range(len(fields))]], fields=fields)
    return _in_order(db, query, fields)


def _build_update(db, model, values):
    fields = _fields(model, values)
    if not fields:
        raise ValueError(f"an UPDATE of {model.__name__} needs a column")
    query = (model.update({field: _stand_in(i) for i, field in enumerate(fields)})
             .where(model._meta.primary_key == _stand_in(len(fields))))
    return _in_order(db, query, [*fields, None])   # None: the primary key


def _fields(model, names) -> list:
    unknown = [name for name in names if name not in model._meta.fields]
    if unknown:
        raise TypeError(f"{model.__name__} has no field {', '.join(unknown)}")
    return [model._meta.fields[name] for name in names]


def _stand_in(i: int):
    # Numbered stand-ins, never converted, come back as the parameters in
    # peewee's order (which sorts columns its own way): that order is kept.
    return pw.Value(i, converter=False, unpack=False)


def _in_order(db, query, fields):
    sql, stand_ins = db.get_sql_context().sql(query).query()
    if sorted(stand_ins, key=repr) != sorted(range(len(fields)), key=repr):   # repr: "1" is not 1
        raise AssertionError(f"unexpected parameters building {sql}: {stand_ins}")
    return sql, tuple(fields[i] for i in stand_ins)


# ---- the cache -------------------------------------------------------------

def _statement(db, key, make):
    """The cached entry for `key` on this database, made (outside the lock) the first time."""
    with _lock:
        entry = _built.get(db, {}).get(key)
    if entry is None:
        entry = make()
        with _lock:
            entry = _built.setdefault(db, {}).setdefault(key, entry)
    return entry
