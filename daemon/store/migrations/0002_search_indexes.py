"""Indexes for the filter language (daemon/orders/filters.py), few on purpose.

- (status, created_at): any combination of status words is one
  `status IN (…)`; "newest first" reads created_at from the same index.
- (created_at): since:/until: and the unfiltered list, newest first.
- (customer_key, created_at), (surname_key, created_at) and
  (customer_email, created_at), the last replacing 0001's index on the address
  alone: prefix search as a range `>= p AND < p'`. With created_at in the
  index SQLite finds "the newest 50 of all Müllers" from the index alone,
  reading the table for those 50 only. number and status_token are unique
  already.

A range only finds prefixes in code point order: SQLite compares BINARY; on
PostgreSQL the three search columns get the "C" collation (under a linguistic
one such as de-x-icu, "mvula" lies between "mü" and "mý"), which its btree
indexes then serve as well. On PostgreSQL the indexes end in id too, for the
`created_at DESC, id DESC` order; SQLite's end in the rowid anyway.
"""
import peewee

SEARCH_COLUMNS = (("customer_key", 200), ("surname_key", 200), ("customer_email", 254))
REPLACED = ("orders_customer_email", "customer_email")
INDEXES = {
    "orders_status_created_at": "status, created_at",
    "orders_created_at": "created_at",
    "orders_customer_key_created_at": "customer_key, created_at",
    "orders_surname_key_created_at": "surname_key, created_at",
    "orders_customer_email_created_at": "customer_email, created_at",
}


def up(migrator, db):
    postgres = isinstance(db, peewee.PostgresqlDatabase)
    db.execute_sql(f"DROP INDEX IF EXISTS {REPLACED[0]}")
    if postgres:
        for column, width in SEARCH_COLUMNS:
            db.execute_sql(f'ALTER TABLE orders ALTER COLUMN {column} '
                           f'TYPE varchar({width}) COLLATE "C"')
    for name, columns in INDEXES.items():
        columns += ", id" if postgres else ""
        db.execute_sql(f"CREATE INDEX IF NOT EXISTS {name} ON orders ({columns})")


def down(migrator, db):
    for name in INDEXES:
        db.execute_sql(f"DROP INDEX IF EXISTS {name}")
    if isinstance(db, peewee.PostgresqlDatabase):
        for column, width in SEARCH_COLUMNS:
            db.execute_sql(f'ALTER TABLE orders ALTER COLUMN {column} '
                           f'TYPE varchar({width}) COLLATE "default"')
    db.execute_sql(f"CREATE INDEX IF NOT EXISTS {REPLACED[0]} ON orders ({REPLACED[1]})")
