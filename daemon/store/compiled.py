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

Writes (`insert`, `create`, `update`) need no `build`: their
SQL follows from the model and the set of columns, and values are converted
by each field's db_value exactly as `Model.create` / `save` do. Their batch
forms (`insert_many`, `update_many`: a bank statement's thousands of rows)
write a few dozen or hundred rows per statement; `new_keys` draws the ids of
rows about to be inserted, so that rows written together can name each other.

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


def _instance(model, readers, row):
    instance = model(__no_default__=True)   # as peewee makes one of a row: no defaults, nothing dirty
    instance.__data__ = {name: None if value is None and keeps_none else convert(value)
                         for (name, convert, keeps_none), value in zip(readers, row)}
    return instance


def _readers(fields) -> tuple:
    """(name, python_value, whether it leaves None as None) per column: a NULL,
    common in a wide row, then costs no call."""
    def keeps_none(field):
        try:
            return field.python_value(None) is None
        except Exception:
            return False
    return tuple((field.name, field.python_value, keeps_none(field)) for field in fields)


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
        return sql, len(stand_ins), (_readers(columns) if columns and own else None)

    sql, count, fields = _statement(db, (model, name), make)
    if len(params) != count:
        raise TypeError(f"{name}: the statement takes {count} parameters, {len(params)} given")
    return sql, fields


# ---- writes ----------------------------------------------------------------

# Rows of one multi-row INSERT: times a table's dozen columns, within the 999
# parameters of SQLite builds before 3.32; more rows per statement gain little.
ROWS_PER_INSERT = 64


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


def update_many(model, pks, **values) -> int:
    """UPDATE these columns to the same values in every row whose primary key
    is one of `pks`: one statement per few hundred rows; the rows changed."""
    db = model._meta.database
    pk_field = model._meta.primary_key
    changed = 0
    for chunk in padded(list(dict.fromkeys(pks))):
        sql, fields = _statement(db, ("update_many", model, frozenset(values), len(chunk)),
                                 lambda: _build_update(db, model, values, len(chunk)))
        keys = iter(chunk)
        params = [pk_field.db_value(next(keys)) if field is None else field.db_value(values[field.name])
                  for field in fields]
        changed += db.rows_affected(db.execute_sql(sql, params))
    return changed


def insert_many(model, rows: list[dict]) -> None:
    """INSERT the rows as `insert` would each (the defaults of the columns
    they leave out filled in, values through db_value), ROWS_PER_INSERT to a
    statement. Every row names the same columns; its primary key drawn by
    `new_keys`, or none does (the database numbers them)."""
    if not rows:
        return
    meta, db = model._meta, model._meta.database
    given = frozenset(rows[0])
    if any(row.keys() != given for row in rows):
        raise ValueError(f"the rows of one {model.__name__}.insert_many name the same columns")
    if meta.primary_key.name in given and any(row[meta.primary_key.name] is None for row in rows):
        raise ValueError(f"{model.__name__}.insert_many: a primary key is None")
    fixed = {name: value for name, value in meta._default_by_name.items() if name not in given}
    made = [(name, default) for name, default in meta._default_callable_list if name not in given]
    columns = frozenset([*given, *fixed, *(name for name, _ in made)])
    done = 0
    for size in _pieces(len(rows), ROWS_PER_INSERT):
        sql, spots = _statement(db, ("insert_many", model, columns, size),
                                lambda: _build_insert(db, model, dict.fromkeys(columns), size))
        chunk = rows[done:done + size]
        if fixed or made:
            chunk = [{**fixed, **row, **{name: default() for name, default in made}} for row in chunk]
        db.execute_sql(sql, [convert(chunk[row][name]) for row, name, convert in spots])
        done += size


def new_keys(model, count: int) -> list[int]:
    """Primary keys for `count` rows about to be inserted, drawn before:
    rows written together can then name each other (a mail its event) without
    relying on the order RETURNING gives, which neither database promises.

    PostgreSQL: the column's sequence. SQLite: the numbers after the largest,
    as SQLite itself would give them (the table has no AUTOINCREMENT); only
    in a write transaction, which holds the one write lock, so no one else
    takes them meanwhile."""
    if count <= 0:
        return []
    db, meta = model._meta.database, model._meta
    table, column = meta.table_name, meta.primary_key.column_name
    if db.returning_clause:      # PostgreSQL
        cursor = db.execute_sql("SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                                (table, column, count))
        return [key for (key,) in cursor.fetchall()]
    if not db.in_transaction():
        raise RuntimeError("new_keys on SQLite needs the write transaction the rows go in")
    (largest,) = db.execute_sql(f'SELECT max("{column}") FROM "{table}"').fetchone()
    first = (largest or 0) + 1
    return list(range(first, first + count))


def padded(values: list, most: int = 512):
    """`values` in chunks of at most `most`, each filled up to a power of two
    with its last value again: an IN (…) list of a few sizes, each built once
    (a value twice in IN changes nothing)."""
    for start in range(0, len(values), most):
        chunk = values[start:start + most]
        size = 1 << (len(chunk) - 1).bit_length()
        yield chunk + [chunk[-1]] * (size - len(chunk))


def _pieces(count: int, most: int):
    """`count` as sums of `most` and then powers of two: a few statement sizes, each built once."""
    while count >= most:
        yield most
        count -= most
    bit = 1 << max(count.bit_length() - 1, 0)
    while count:
        if count & bit:
            yield bit
            count -= bit
        bit >>= 1


def insert_sql(model, **values) -> tuple[str, list]:
    """`insert`'s statement and parameters, not run: for a larger statement
    that writes more with it (on PostgreSQL it ends in RETURNING the key)."""
    data = model._meta.get_default_dict()
    data.update(values)
    return _insert_sql(model, data)


def _insert_sql(model, data: dict) -> tuple[str, list]:
    meta = model._meta
    if meta.auto_increment and data.get(meta.primary_key.name) is None:
        data.pop(meta.primary_key.name, None)   # the database numbers the row
    db = meta.database
    sql, spots = _statement(db, ("insert", model, frozenset(data)), lambda: _build_insert(db, model, data, 1))
    return sql, [convert(data[name]) for _row, name, convert in spots]


def _insert(model, data: dict):
    db = model._meta.database
    cursor = db.execute_sql(*_insert_sql(model, data))
    # PostgreSQL: INSERT … RETURNING the key (peewee adds it); SQLite: the rowid
    return cursor.fetchone()[0] if db.returning_clause else cursor.lastrowid


def _build_insert(db, model, data, rows: int):
    """INSERT of `rows` rows; the parameters as (row, field name, db_value).
    One row keeps peewee's RETURNING of the key on PostgreSQL (`_insert`
    reads it), several return nothing."""
    fields = _fields(model, data)
    width = len(fields)
    query = model.insert_many([[_stand_in(row * width + i) for i in range(width)] for row in range(rows)],
                              fields=fields)
    if rows > 1:
        query = query.returning()
    return _in_order(db, query, [(row, field.name, field.db_value) for row in range(rows) for field in fields])


def _build_update(db, model, values, keys: int | None = None):
    """UPDATE … WHERE pk = ? (`keys` None) or pk IN (`keys` parameters); None in
    the parameters' fields stands for a primary key."""
    fields = _fields(model, values)
    if not fields:
        raise ValueError(f"an UPDATE of {model.__name__} needs a column")
    pk = model._meta.primary_key
    where = (pk == _stand_in(len(fields)) if keys is None
             else pk.in_([_stand_in(len(fields) + i) for i in range(keys)]))
    query = model.update({field: _stand_in(i) for i, field in enumerate(fields)}).where(where)
    return _in_order(db, query, [*fields, *([None] * (keys or 1))])


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
