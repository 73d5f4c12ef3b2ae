"""Scheduled jobs remember their last run, so a run missed while the daemon was down is caught up.

- job_run: one row per job name; `created_at` is when this database first
  saw the job (a run due before that was never missed), `last_run_at` the
  moment the last run was for (its `now`), with how it ended.
"""
import datetime

from peewee import CharField, DateTimeField, Model, TextField


def up(migrator, db):
    class JobRun(Model):
        name = CharField(max_length=60, primary_key=True)
        created_at = DateTimeField(default=datetime.datetime.utcnow)
        last_run_at = DateTimeField(null=True)
        last_finished_at = DateTimeField(null=True)
        last_status = CharField(max_length=10, default="")
        last_result = TextField(default="")

        class Meta:
            database = db
            table_name = "job_run"

    db.create_tables([JobRun])


def down(migrator, db):
    db.execute_sql("DROP TABLE IF EXISTS job_run")
