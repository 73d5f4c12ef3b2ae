"""What the scheduler remembers: each job's last run (table `job_run`, migration 0004),
the due time a daemon claimed (`last_due_at`), and what the daily jobs did
(table `job_log`, migration 0018) for the owner's digest.

Kept beside `daemon/store.py` rather than in it: only the scheduler and
`ordermail jobs` read it. `bind(store)` ties the model to an open store, as
`open_store` does for the models of store.py.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import peewee as pw

from daemon.store import BaseModel, CharField, JSONTextField, Store, TextField, utcnow


class JobRun(BaseModel):
    name = CharField(max_length=60, primary_key=True)
    created_at = pw.DateTimeField(default=utcnow)
    last_run_at = pw.DateTimeField(null=True)        # the `now` the last run was for
    last_finished_at = pw.DateTimeField(null=True)   # the clock when it ended
    last_status = CharField(max_length=10, default="")   # "ok" or "error"
    last_result = TextField(default="")
    last_due_at = pw.DateTimeField(null=True)        # the due time the last scheduled run claimed

    class Meta:
        table_name = "job_run"


class JobLog(BaseModel):
    """One run of a daily job that did something: its summary and the orders it touched."""
    name = CharField(max_length=60)
    ran_at = pw.DateTimeField(default=utcnow)        # the run's `now`
    result = TextField(default="")
    details = JSONTextField(default=dict)            # {"reminded": ["1042", …], …}

    class Meta:
        table_name = "job_log"


@dataclass
class Outcome:
    """What a run of a daily job did: the orders it touched, one list per kind of
    change (a count where there are no orders to name, e.g. pruned raw mails)."""
    done: dict[str, list[str] | int] = field(default_factory=dict)

    def add(self, key: str, number: str) -> None:
        self.done.setdefault(key, []).append(number)


def bind(store: Store) -> None:
    store.db.bind([JobRun, JobLog])


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


def claim(name: str, due: dt.datetime) -> bool:
    """Take the run due at `due` for this process; False if another daemon took it.

    One UPDATE that only succeeds while the stored due time is older: SQLite
    runs one writer at a time, PostgreSQL re-reads the row it waited for.
    """
    JobRun.insert(name=name, created_at=due).on_conflict_ignore().execute()
    taken = (JobRun.update(last_due_at=due)
             .where((JobRun.name == name) & (JobRun.last_due_at.is_null() | (JobRun.last_due_at < due)))
             .execute())
    return taken == 1


def log_run(name: str, now: dt.datetime, result: str, details: dict) -> None:
    JobLog.create(name=name, ran_at=now, result=result[:2000], details=details)


def logged_since(since: dt.datetime | None, until: dt.datetime) -> list[JobLog]:
    """The logged runs after `since` (all when None) up to `until`, oldest first."""
    query = JobLog.select().where(JobLog.ran_at <= until)
    if since is not None:
        query = query.where(JobLog.ran_at > since)
    return list(query.order_by(JobLog.ran_at, JobLog.id))


def forget_logs_before(moment: dt.datetime) -> int:
    return JobLog.delete().where(JobLog.ran_at < moment).execute()
