"""Reading a stored message's raw bytes with as few copies as possible.

SQLite: through the blob API, straight into the one bytes object returned (a
SELECT would have SQLite assemble the value in its own memory first, then
copy it into Python). PostgreSQL: a plain select of the column, without
peewee's conversions on top of the driver's.
"""
from __future__ import annotations

import peewee as pw

from daemon.store.database import InboundRaw


def load_raw(message_id: int, limit: int | None = None) -> bytes | None:
    """The raw bytes of inbound message `message_id` (the first `limit` of them,
    if given); None if there is no such row."""
    db = InboundRaw._meta.database
    table = InboundRaw._meta.table_name
    if isinstance(db, pw.SqliteDatabase):     # inbound_id is the rowid
        try:
            with pw.__exception_wrapper__, db.connection().blobopen(table, "raw", message_id,
                                                                    readonly=True) as blob:
                return blob.read(-1 if limit is None else limit)
        except pw.OperationalError:   # no such row (or not a blob): the plain select decides
            pass
    column = "raw" if limit is None else f"substr(raw, 1, {int(limit)})"
    cursor = db.execute_sql(f"SELECT {column} FROM {table} WHERE inbound_id = {db.param}", (message_id,))
    try:
        row = cursor.fetchone()
    finally:
        cursor.close()
    if row is None or row[0] is None:
        return None
    value = row[0]
    del row
    return value if isinstance(value, bytes) else bytes(value)
