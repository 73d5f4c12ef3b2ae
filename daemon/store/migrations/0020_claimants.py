"""Who holds a scheduled run and an outbox row, so that a daemon that dies
holding one does not hold it for long (daemon/store/claimants.py).

- job_run.claimed_by, job_run.claimed_until: the daemon (`host:pid`) that
  claimed the run due at `last_due_at`, and until when that claim stands;
  null once the run ended. A run whose daemon died before it ended is taken
  over by another daemon: at once when the dead one ran on the same host,
  else when `claimed_until` has passed (daemon/store/job_runs.py).
- outbox_message.claimed_by: the worker process sending a row (state
  `sending`). A row of a worker that died is sent again at once by the
  next worker started on that host, instead of after the 15-minute lease.

The new columns may be null: a daemon of the release before, still running
while another one migrates, inserts rows without them.
"""
from peewee import CharField, DateTimeField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("job_run", "claimed_by", CharField(max_length=100, null=True)),
        migrator.add_column("job_run", "claimed_until", DateTimeField(null=True)),
        migrator.add_column("outbox_message", "claimed_by", CharField(max_length=100, null=True)),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.drop_column("job_run", "claimed_by"),
        migrator.drop_column("job_run", "claimed_until"),
        migrator.drop_column("outbox_message", "claimed_by"),
    )
