"""What the scheduler remembers: each job's last run (table `job_run`, migration 0004).

Kept beside `daemon/store.py` rather than in it: only the scheduler and
`ordermail jobs` read it. `bind(store)` ties the model to an open store, as
`open_store` does for the models of store.py.
"""
from __future__ import annotations

import datetime as dt

import peewee as pw

from daemon.store import BaseModel, CharField, Store, TextField, utcnow


class JobRun(BaseModel):
    name = CharField(max_length=60, primary_key=True)
    created_at = pw.DateTimeField(default=utcnow)
    last_run_at = pw.DateTimeField(null=True)        # the `now` the last run was for
    last_finished_at = pw.DateTimeField(null=True)   # the clock when it ended
    last_status = CharField(max_length=10, default="")   # "ok" or "error"
    last_result = TextField(default="")

    class Meta:
        table_name = "job_run"


def bind(store: Store) -> None:
    store.db.bind([JobRun])


def ensure(names, now: dt.datetime) -> None:
    """A row for every job, so a catch-up never reaches back before the job existed."""
    for name in names:
        JobRun.insert(name=name, created_at=now).on_conflict_ignore().execute()


def runs() -> dict[str, JobRun]:
    return {run.name: run for run in JobRun.select()}


def record(name: str, now: dt.datetime, status: str, result: str) -> None:
    values = {"last_run_at": now, "last_finished_at": utcnow(), "last_status": status,
              "last_result": result[:2000]}
    if not JobRun.update(**values).where(JobRun.name == name).execute():
        JobRun.insert(name=name, created_at=now, **values).on_conflict_ignore().execute()
