"""What the scheduler remembers: each job's last run (table `job_run`, migration 0004),
the due time a daemon claimed (`last_due_at`, migration 0018) and who holds
that claim until when (`claimed_by`, `claimed_until`, migration 0020), and
what the daily jobs did (table `job_log`, migration 0018) for the owner's digest.

A daily job's run is claimed per due time, in the row itself: one
conditional UPDATE, so of several daemons exactly one runs it, on SQLite
and PostgreSQL alike, and the claim outlives any connection. (An advisory
lock would not: PostgreSQL lets go of it when the connection drops — a
restart of the server — while the daemon, reconnected, runs on.) A claim
ends when its run ends, and is taken over when its daemon died first: at
once by a daemon on the same host (daemon/store/claimants.py), by a daemon
elsewhere once `RUN_LEASE` has passed; and by the same daemon at its next
look when the store failed under the run. The daily jobs change each order
under its lock and only once, so a run taken over does the rest of the work.

Kept beside `daemon/store/database.py` rather than in it: only the scheduler and
`ordermail jobs` read it. `bind(store)` ties the model to an open store, as
`open_store` does for the models of store/database.py.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import peewee as pw

from daemon.store.claimants import claimant, claimant_gone
from daemon.store.models import BaseModel, CharField, JSONTextField, TextField, utcnow
from daemon.store.database import Store

# How long a daemon elsewhere is trusted to be running a daily job it claimed:
# longer than any run takes, shorter than the day until the next one.
RUN_LEASE = dt.timedelta(hours=1)


class JobRun(BaseModel):
    name = CharField(max_length=60, primary_key=True)
    created_at = pw.DateTimeField(default=utcnow)
    last_run_at = pw.DateTimeField(null=True)        # the `now` the last run was for
    last_finished_at = pw.DateTimeField(null=True)   # the clock when it ended
    last_status = CharField(max_length=10, default="")   # "ok" or "error"
    last_result = TextField(default="")
    last_due_at = pw.DateTimeField(null=True)        # the due time the last scheduled run claimed
    claimed_by = CharField(max_length=100, null=True)   # host:pid of the daemon running it
    claimed_until = pw.DateTimeField(null=True)      # the claim's end; null once the run ended

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


def claim(name: str, due: dt.datetime, now: dt.datetime | None = None, *, by: str | None = None) -> bool:
    """Take the run due at `due` for this process (`by`); False if another daemon has it.

    Free when no daemon claimed `due` yet, or when the claim of `due` was
    left unfinished (`abandoned`). One UPDATE decides, on the values read:
    SQLite runs one writer at a time, and PostgreSQL re-reads the row it
    waited for, whose claim then no longer matches.
    """
    now, by = now or utcnow(), by or claimant()
    JobRun.insert(name=name, created_at=due).on_conflict_ignore().execute()
    row = JobRun.get_by_id(name)
    if row.last_due_at is None or row.last_due_at < due:
        free = JobRun.last_due_at.is_null() | (JobRun.last_due_at < due)
    elif row.last_due_at == due and abandoned(row, now, by):
        free = ((JobRun.last_due_at == due) & (JobRun.claimed_by == row.claimed_by)
                & (JobRun.claimed_until == row.claimed_until))
    else:
        return False
    taken = (JobRun.update(last_due_at=due, claimed_by=by, claimed_until=now + RUN_LEASE)
             .where((JobRun.name == name) & free).execute())
    return taken == 1


def abandoned(row: JobRun, now: dt.datetime, by: str) -> bool:
    """The run claimed in `row` did not end, and nobody is running it.

    Its daemon is gone (on this host), its lease passed (elsewhere), or it
    is `by` itself: the scheduler runs one job at a time, so a claim of its
    own that it finds unfinished is one the store broke off."""
    return row.claimed_until is not None and (
        row.claimed_by == by or row.claimed_until < now or claimant_gone(row.claimed_by))


def finished(name: str, due: dt.datetime) -> None:
    """The run due at `due` ended (well or with an error): its claim is over."""
    (JobRun.update(claimed_until=None)
     .where((JobRun.name == name) & (JobRun.last_due_at == due) & (JobRun.claimed_by == claimant())).execute())


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
