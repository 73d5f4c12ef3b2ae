"""Numbered schema migrations, applied in order by `daemon.store.database.migrate_schema`.

Each script declares frozen copies of the tables it touches, so it keeps
meaning the same thing when the models in `daemon/store/database.py` move on. A new
column or table means a new script, never an edit of an applied one.
"""
