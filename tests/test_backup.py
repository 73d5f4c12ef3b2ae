"""`ordermail backup` and `ordermail restore`, through the real command line.

SQLite: a backup taken while the daemon takes mail is a consistent copy
(every received mail in it with its bytes, a check that passes) and holds
back no sender; restore is refused while any process has the database open,
checks what it is given, keeps the database it replaces, and the daemon runs
on the restored one. PostgreSQL: both print the pg_dump / pg_restore command
and exit 2 — and the printed commands work as printed.
"""
from __future__ import annotations

import json
import shlex
import shutil
import smtplib
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import sample_order
from daemonproc import Daemon, wait_until

only_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
only_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def _database_file(settings) -> Path:
    return Path(settings.database.url.removeprefix("sqlite:///"))


def _create(ordermail, number: str) -> None:
    result = ordermail("order", "create", "--json", "-", "--quiet", stdin=json.dumps(sample_order(number)))
    assert result.returncode == 0, result.stderr


class MailFlood:
    """Replies sent to the daemon one after another until stopped; remembers when each was acknowledged."""

    def __init__(self, port: int):
        self.port, self.acknowledged, self._stop = port, [], threading.Event()
        self.thread = threading.Thread(target=self._send, daemon=True)

    def __enter__(self) -> "MailFlood":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join(30)

    def _send(self) -> None:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as smtp:
            n = 0
            while not self._stop.is_set():
                n += 1
                smtp.sendmail("kunde@example.org", ["orders@shop.example"],
                              f"From: kunde@example.org\r\nMessage-ID: <flood-{n}@example.org>\r\n"
                              f"Subject: Frage {n}\r\n\r\n{'Hallo ' * 200}\r\n".encode())
                self.acknowledged.append(time.monotonic())


@only_sqlite
def test_a_backup_while_the_daemon_takes_mail_is_consistent_and_holds_back_no_sender(
        tmp_path, settings, ordermail):
    daemon = Daemon(tmp_path, settings.database.url).start()
    target = tmp_path / "backups" / "ordermail.db"
    target.parent.mkdir()
    try:
        with MailFlood(daemon.smtp_port) as flood:
            wait_until(lambda: len(flood.acknowledged) >= 200, 60)
            started = time.monotonic()
            result = ordermail("backup", str(target))
            finished = time.monotonic()
            wait_until(lambda: flood.acknowledged[-1] > finished + 0.5, 30)
        assert result.returncode == 0, result.stderr
        assert f"written to {target}" in result.stdout and "schema 00" in result.stdout
        during = [t for t in flood.acknowledged if started <= t <= finished]
        assert during, "no mail was acknowledged while the backup ran"
    finally:
        daemon.stop()
    with sqlite3.connect(target) as copy:
        assert copy.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"      # one file, no -wal
        taken = copy.execute("SELECT count(*) FROM inbound_message").fetchone()[0]
        without_bytes = copy.execute("SELECT count(*) FROM inbound_message m WHERE NOT EXISTS "
                                     "(SELECT 1 FROM inbound_raw r WHERE r.inbound_id = m.id)").fetchone()[0]
    assert not Path(f"{target}-wal").exists()
    with sqlite3.connect(_database_file(settings)) as live:
        total = live.execute("SELECT count(*) FROM inbound_message").fetchone()[0]
    assert 200 <= taken < total          # a moment in the middle of the flood
    assert without_bytes == 0            # each mail whole: its row and its bytes, or neither


@only_sqlite
def test_backup_never_overwrites_a_file_unless_forced(tmp_path, settings, ordermail):
    _create(ordermail, "1042")
    target = tmp_path / "ordermail-backup.db"
    target.write_text("yesterday's backup")
    refused = ordermail("backup", str(target))
    assert refused.returncode == 1
    assert refused.stderr.strip() == f"ordermail: {target} exists; name another file, or pass --force to replace it"
    assert target.read_text() == "yesterday's backup"
    assert not list(tmp_path.glob(".ordermail-backup.db.*"))        # no half-written copy left
    forced = ordermail("backup", str(target), "--force")
    assert forced.returncode == 0, forced.stderr
    assert "1 orders" in forced.stdout


@only_sqlite
def test_restore_is_refused_while_ordermail_runs_and_brings_the_backup_back_when_stopped(
        tmp_path, settings, ordermail):
    _create(ordermail, "1042")
    backup = tmp_path / "monday.db"
    assert ordermail("backup", str(backup)).returncode == 0
    _create(ordermail, "1043")                 # after the backup: gone once it is restored

    daemon = Daemon(tmp_path, settings.database.url).start()
    try:
        wait_until(lambda: "ordermail ready" in daemon.log_text(), 60)     # the workers have the database open
        refused = ordermail("restore", str(backup))
        assert refused.returncode == 1
        assert f"pid {daemon.process.pid} (ordermail serve" in refused.stderr
        assert "a worker process" in refused.stderr and "stop ordermail" in refused.stderr
    finally:
        assert daemon.stop() == 0

    restored = ordermail("restore", str(backup))
    assert restored.returncode == 0, restored.stderr
    database = _database_file(settings)
    assert f"restored {database} from {backup}" in restored.stdout and "1 orders" in restored.stdout
    kept = Path(restored.stdout.rpartition("kept as ")[2].strip())
    assert kept.name.startswith("ordermail.db.before-restore-")
    with sqlite3.connect(kept) as before:       # whole: its WAL was folded in before it was moved
        assert before.execute("SELECT number FROM orders ORDER BY number").fetchall() == [("1042",), ("1043",)]

    assert ordermail("order", "show", "1042").returncode == 0
    assert ordermail("order", "show", "1043").stderr.strip() == "ordermail: no order 1043"
    daemon = Daemon(tmp_path, settings.database.url).start()        # and the daemon runs on it
    try:
        with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=10) as smtp:
            assert smtp.sendmail("kunde@example.org", ["orders@shop.example"],
                                 b"From: kunde@example.org\r\nSubject: Frage\r\n\r\nHallo\r\n") == {}
    finally:
        assert daemon.stop() == 0


@only_sqlite
def test_restore_takes_only_an_ordermail_database_this_release_can_read(tmp_path, settings, ordermail):
    _create(ordermail, "1042")
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all\n" * 100)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE things (id INTEGER)")
    newer = tmp_path / "newer.db"
    assert ordermail("backup", str(newer)).returncode == 0
    with sqlite3.connect(newer) as db:
        db.execute("INSERT INTO schema_migration (name, applied) VALUES ('0099_from_the_future', '2030-01-01')")

    answers = {path.name: ordermail("restore", str(path)) for path in (text, other, newer, tmp_path / "missing.db")}
    assert (answers["notes.txt"].returncode, answers["notes.txt"].stderr.strip()) == (
        2, f"ordermail: {text} is not an SQLite database (file is not a database)")
    assert (answers["other.db"].returncode, answers["other.db"].stderr.strip()) == (
        2, f"ordermail: {other} is an SQLite database, but not ordermail's")
    assert answers["newer.db"].returncode == 1
    assert "written by a newer ordermail (schema 0099_from_the_future)" in answers["newer.db"].stderr
    assert answers["missing.db"].returncode == 2
    # Nothing was touched.
    assert ordermail("order", "show", "1042").returncode == 0
    assert not list(tmp_path.glob("ordermail.db.before-restore-*"))


@only_postgresql
def test_postgresql_backup_and_restore_print_commands_that_work_as_printed(tmp_path, settings, ordermail):
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("pg_dump/pg_restore not installed (Debian package postgresql-client)")
    _create(ordermail, "1042")
    dump = tmp_path / "ordermail.dump"
    told = ordermail("backup", str(dump))
    assert told.returncode == 2 and not dump.exists()           # nothing written: no script takes it for a backup
    assert "backup copies SQLite databases only; for PostgreSQL run the command above" in told.stderr
    command = told.stdout.strip()
    assert command.startswith("pg_dump --format=custom") and "--schema=t_" in command
    assert subprocess.run(shlex.split(command), capture_output=True, timeout=120).returncode == 0

    _create(ordermail, "1043")                  # after the dump: gone once it is restored
    told = ordermail("restore", str(dump))
    assert told.returncode == 2 and "restore copies SQLite databases only" in told.stderr
    restored = subprocess.run(shlex.split(told.stdout.strip()), capture_output=True, text=True, timeout=120)
    assert restored.returncode == 0, restored.stderr
    assert ordermail("order", "show", "1042").returncode == 0
    assert ordermail("order", "show", "1043").returncode == 1
