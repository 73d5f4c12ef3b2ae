"""The store: opening the database (SQLite or PostgreSQL), its locks and migrations.

The tables are in `models.py`: orders and their items, the log (events) with attachments kept by
content hash, inbound messages (raw bytes and state) and the outbox. The
schema is versioned by numbered scripts in `daemon/store/migrations/`, applied on
open, so an upgrade migrates an existing database. Driver errors are turned
into `StoreUnavailable` here and nowhere else.

A PostgreSQL connection the server dropped (a restart, a crash, an admin's
pg_terminate_backend) is replaced here too, for every thread of every
process at once: see `ReconnectingPostgresqlDatabase`.
"""
from __future__ import annotations

import fcntl
import logging
import os
import re
import select
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import peewee as pw
import psycopg2
from playhouse.migrations import Runner
from psycopg2.extensions import ISOLATION_LEVEL_READ_COMMITTED

from daemon.errors import StoreTooNew, StoreUnavailable
from daemon.store.models import MODELS

# The store failing rather than a statement: a lost or refused connection, a
# server shutting down, a lock or statement timeout. Try again later.
STORE_TROUBLE = (pw.OperationalError, pw.InterfaceError)
# Any failure of the database, ours included: what a door answers "try again later" to.
DATABASE_ERRORS = (pw.DatabaseError, pw.InterfaceError, StoreUnavailable)
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SQLITE_PRAGMAS = {
    "journal_mode": "wal",      # readers never block the writer
    "synchronous": 2,           # FULL: a commit survives power loss
    "busy_timeout": 10_000,     # wait for a writer instead of failing at once
    "foreign_keys": 1,          # cascades keep the log consistent on delete
}

class WriterLock:
    """SQLite's single writer, queued across threads and processes — mail intake first.

    Threads of one process queue on an in-process gate; processes (the
    daemon, its worker process, `ordermail deliver`, the CLI) on a lock file
    beside the database. Both hand over at once, where SQLite's own busy
    handler sleeps up to 100 ms between tries.

    A lock is not fair: a worker that commits and starts its next
    transaction at once would take the lock again before a waiting sender's
    commit is even scheduled. So an urgent writer (the spool, whose senders
    wait for their 250) holds a second file, the turnstile, while it waits,
    and everyone else passes the turnstile before taking the lock.
    """

    def __init__(self, path: str | None):
        self.path = path
        self.gate = threading.RLock()
        self._depth = 0
        self._fds: dict[str, int] = {}
        self._urgent_at_gate: set[int] = set()     # threads of this process; set.add is atomic

    @contextmanager
    def held(self, urgent: bool = False):
        self._pass_gate(urgent)
        try:
            outermost = self._depth == 0
            if outermost and self.path is not None:
                self._take(urgent)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if outermost and self.path is not None:
                    fcntl.flock(self._fd("writer"), fcntl.LOCK_UN)
        finally:
            self.gate.release()

    def urgent_waiting(self) -> bool:
        """Whether an urgent writer waits for the holder (who asks) to commit.

        A long transaction ends early when this says yes: a sender's 250
        waits for every millisecond it lasts. Cheap enough to ask between
        any two steps (a set, then at most two flock calls). The holder asks,
        so no other thread of its process is past the gate or at the turnstile.
        """
        if self._urgent_at_gate:
            return True
        if self.path is None:
            return False
        turnstile = self._fd("turnstile")
        try:
            fcntl.flock(turnstile, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:             # held by an urgent writer of another process
            return True
        fcntl.flock(turnstile, fcntl.LOCK_UN)
        return False

    def _pass_gate(self, urgent: bool) -> None:
        if not urgent:
            self.gate.acquire()
            return
        me = threading.get_ident()
        self._urgent_at_gate.add(me)
        try:
            self.gate.acquire()
        finally:
            self._urgent_at_gate.discard(me)

    def _take(self, urgent: bool) -> None:
        # flock blocks without holding the interpreter lock
        turnstile, writer = self._fd("turnstile"), self._fd("writer")
        if urgent:
            fcntl.flock(turnstile, fcntl.LOCK_EX)
            try:
                fcntl.flock(writer, fcntl.LOCK_EX)
            finally:
                fcntl.flock(turnstile, fcntl.LOCK_UN)
        else:
            fcntl.flock(turnstile, fcntl.LOCK_SH)     # waits while an urgent writer waits
            fcntl.flock(turnstile, fcntl.LOCK_UN)
            fcntl.flock(writer, fcntl.LOCK_EX)

    def hold_in_use(self) -> None:
        """A shared lock on `<database>-open.lock` for as long as this store is open.

        Every process that opens the database holds one (the daemon, its
        workers, the web app, `ordermail deliver`, a command), and the kernel
        lets go of it when the process ends, however it ends. `ordermail
        restore` takes it exclusively, so it never replaces a database in
        use, and anyone opening the database meanwhile waits for it.
        """
        if self.path is not None:
            fcntl.flock(self._fd("open"), fcntl.LOCK_SH)

    def lock_out_users(self) -> bool:
        """`ordermail restore`: the lock of `hold_in_use`, exclusively, if no process holds it."""
        try:
            fcntl.flock(self._fd("open"), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _fd(self, name: str) -> int:
        fd = self._fds.get(name)
        if fd is None:
            fd = self._fds[name] = os.open(f"{self.path}-{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            give_to_database_owner(fd, self.path)
        return fd

    def close(self) -> None:
        with self.gate:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


@dataclass
class Store:
    """An open database with the models bound to it."""
    db: pw.Database
    url: str
    writer: WriterLock = field(default_factory=lambda: WriterLock(None))
    _savepoints: threading.local = field(default_factory=threading.local, repr=False)   # depth per thread

    @property
    def backend(self) -> str:
        return "postgresql" if isinstance(self.db, pw.PostgresqlDatabase) else "sqlite"

    @contextmanager
    def atomic(self, urgent: bool = False):
        """A transaction (a savepoint when nested); yields peewee's, for rollback().

        `urgent`: someone waits for this commit (a sender for its 250), so on
        SQLite it goes before background work queued for the one writer.
        """
        if self.backend == "postgresql":
            with self._transaction() as transaction:
                yield transaction
            return
        with self.writer.held(urgent), self._transaction() as transaction:
            yield transaction

    @contextmanager
    def _transaction(self):
        """peewee's transaction; nested, a savepoint named by its depth.

        peewee names each savepoint with a fresh uuid: every SAVEPOINT and
        RELEASE is then a new statement, compiled anew and never found in the
        driver's statement cache. Names by depth repeat, so they are cached.
        """
        if not self.db.in_transaction():
            with self.db.atomic() as transaction:
                yield transaction
            return
        local = self._savepoints
        if getattr(local, "whole", None) is not None:
            yield from _without_savepoint(local.whole)
            return
        depth = getattr(local, "depth", 0) + 1
        local.depth = depth
        try:
            with pw._savepoint(self.db, f"sp{depth}") as savepoint:   # db.savepoint() takes no name
                yield savepoint
        finally:
            local.depth = depth - 1

    @contextmanager
    def all_or_nothing(self):
        """Inside a transaction: nested `atomic()` blocks take no savepoint
        (on PostgreSQL each is two more round trips), since the caller undoes
        the whole transaction if any part fails. A nested block left by an
        exception, or asked to roll back, marks the transaction broken, and
        leaving this block then raises `Broken` even if that exception was
        caught inside: nothing half-done is ever committed."""
        local = self._savepoints
        if not self.db.in_transaction() or getattr(local, "whole", None) is not None:
            raise RuntimeError("all_or_nothing belongs directly inside one transaction")
        local.whole = whole = _Whole()
        try:
            yield
        finally:
            local.whole = None
        if whole.broken:
            raise Broken("a part of an all-or-nothing transaction failed")

    def urgent_waiting(self) -> bool:
        """Whether a sender waits for the one writer (SQLite) that this transaction holds."""
        return self.backend == "sqlite" and self.writer.urgent_waiting()

    def close(self) -> None:
        if not self.db.is_closed():
            self.db.close()
        self.writer.close()

    def schema_status(self) -> tuple[list[str], list[str]]:
        """(applied, pending) migration names."""
        rows = Runner(self.db, str(MIGRATIONS_DIR)).status()
        return ([m.name for m in rows if m.applied], [m.name for m in rows if not m.applied])


class Broken(Exception):
    """A part of an all-or-nothing transaction failed (`Store.all_or_nothing`):
    roll it all back, and do the work again with savepoints."""


class _Whole:
    """The nested blocks of an all-or-nothing transaction, and whether one failed."""
    broken = False

    def rollback(self, begin=False):
        self.broken = True
        raise Broken("a nested block of an all-or-nothing transaction rolled back")


def _without_savepoint(whole: _Whole):
    try:
        yield whole
    except BaseException:
        whole.broken = True
        raise


_A_READ = re.compile(r"\s*SELECT\b", re.IGNORECASE)


class ReconnectingPostgresqlDatabase(pw.PostgresqlDatabase):
    """peewee's PostgreSQL database, whose threads outlive the server's restarts.

    peewee keeps one connection per thread and never replaces it: once the
    server drops it, every later use in that thread fails ("connection
    already closed"), and a thread that rolls back over it dies of the
    InterfaceError. Here a dropped connection is noticed and replaced at
    the one moment that is safe, before a transaction or a statement outside
    one: nothing of the caller's is in it then, so nothing is lost or done
    twice. Inside a transaction a lost connection fails the transaction (its
    caller answers "try again later" or retries), and the rollback after it
    ends the connection instead of failing again, so the caller sees the
    error that happened. Retrying a transaction itself would not be safe: a
    COMMIT whose answer was lost may have committed.

    A lone read (a SELECT outside a transaction: the RCPT check's lookup)
    whose connection is dropped under it is asked once more, on a fresh one.

    Dropped: the driver says closed (after an error), or the server spoke
    while the connection was idle. An idle connection's server says nothing
    unless asked — nothing here LISTENs — except to say goodbye: "terminating
    connection" and end of file, on a fast or immediate shutdown, a crash
    (the kernel closes the socket) or pg_terminate_backend. Looking costs a
    poll of the socket, no round trip. A server that vanished without
    closing (a network cut) is found by the next statement's error; the use
    after that reconnects.
    """

    def begin(self, *args, **kwargs):
        self._replace_if_dropped()
        super().begin(*args, **kwargs)

    def execute_sql(self, sql, params=None):
        if self.in_transaction():
            return super().execute_sql(sql, params)
        self._replace_if_dropped()
        try:
            return super().execute_sql(sql, params)
        except STORE_TROUBLE:
            # Dropped under a lone read (the server went down just then): a
            # read can be asked twice, so once more on a fresh connection.
            if not (_A_READ.match(sql) and self._dropped()):
                raise
            self._forget_connection()
            return super().execute_sql(sql, params)

    def rollback(self):
        if not self.in_transaction():    # the end of a failed transaction, not a rollback within one
            try:
                if not self._dropped():
                    super().rollback()
                    return
            except STORE_TROUBLE:
                pass
            self._forget_connection()    # the server rolls back what a closed connection held
            return
        super().rollback()

    def _replace_if_dropped(self) -> None:
        if self._dropped():
            self._forget_connection()    # the caller's next step connects afresh

    def _dropped(self) -> bool:
        if self.is_closed():
            return False
        conn = self._state.conn
        if conn.closed:
            return True
        try:
            idle = select.poll()        # not select(): numbers past 1024 are common in a busy daemon
            idle.register(conn.fileno(), select.POLLIN)
            return bool(idle.poll(0))
        except (OSError, ValueError, psycopg2.Error):     # no socket left to look at
            return True

    def _forget_connection(self) -> None:
        try:
            self._state.conn.close()
        except Exception:   # the socket is gone already; closing is only tidying up
            pass
        self._state.reset()


def open_store(url: str, migrate: bool = True, *, replayable: bool = False) -> Store:
    """Connect, bind the models and bring the schema up to date.

    `replayable`: everything this store writes can be done again from what
    is already durable — the worker processes, whose input is the received
    mail committed with a full sync before it was acknowledged. On SQLite
    their commits then skip the sync (synchronous=NORMAL in WAL): an
    application crash loses nothing, a power cut may lose their last
    transactions, which are handled again from the stored mail (the next
    full sync of anyone's commit makes them durable anyway). Their commits
    hold the one write lock for a fraction of the time.
    """
    db = database_for_url(url, replayable=replayable)
    writer = WriterLock(_lock_path(db))
    writer.hold_in_use()            # before connecting: a restore may be replacing the file
    try:
        db.connect()
        db.bind(MODELS)
        store = Store(db, url, writer)
        if migrate:
            migrate_schema(store)
        return store
    except pw.OperationalError as exc:
        db.close()
        writer.close()
        raise StoreUnavailable(f"cannot open database {redact(url)}: {first_line(exc)}") from None


def migrate_schema(store: Store) -> list[str]:
    """Apply pending migrations; refuse a database from a newer version.

    Several processes may open a fresh or an old database at once (daemons
    on several machines, gunicorn's workers, `ordermail check` before
    `serve`): one migrates, the others wait for it under `_migrating` and
    then find nothing left to do. The schema is looked at only once the lock
    is held, so a daemon older than a schema that a newer one is bringing in
    just then refuses to start too.
    """
    with _migrating(store):
        runner = Runner(store.db, str(MIGRATIONS_DIR))
        rows = runner.status()
        unknown = [m.name for m in rows if m.path is None]
        if unknown:
            known = [m.name for m in rows if m.path is not None]
            raise StoreTooNew(f"the database's schema is newer than this ordermail: it has migration "
                              f"{unknown[-1]}, this ordermail knows up to {known[-1] if known else 'none'}; "
                              "upgrade ordermail")
        return runner.up()


# The first key of the migrations' advisory lock ("om" "mi"); the second is
# the schema's name, hashed: ordermails in other schemas of the same
# database do not wait for each other. Two keys never meet the one-key
# locks of daemon/handling/inbound.py.
MIGRATION_LOCK = 0x6F6D6D69


@contextmanager
def _migrating(store: Store):
    """Hold the one lock for migrating: a PostgreSQL advisory lock of the
    session, or SQLite's writer lock (daemon/store/database.py WriterLock), which
    every process opening the file shares."""
    if store.backend == "sqlite":
        with store.writer.held():
            yield
        return
    db, key = store.db, "hashtext(coalesce(current_schema(), ''))"
    if not db.execute_sql(f"SELECT pg_try_advisory_lock(%s, {key})", (MIGRATION_LOCK,)).fetchone()[0]:
        logging.getLogger("ordermail").info("waiting for another process to finish migrating the database")
        db.execute_sql(f"SELECT pg_advisory_lock(%s, {key})", (MIGRATION_LOCK,))
    try:
        yield
    finally:
        try:
            db.execute_sql(f"SELECT pg_advisory_unlock(%s, {key})", (MIGRATION_LOCK,))
        except STORE_TROUBLE:       # the connection is gone, and the lock with it
            pass


def _lock_path(db: pw.Database) -> str | None:
    """The lock files' stem, `<database>`, for a SQLite file; None for PostgreSQL or memory."""
    if isinstance(db, pw.SqliteDatabase) and db.database != ":memory:":
        return db.database
    return None


def sqlite_file(url: str) -> str | None:
    """The file of a sqlite:/// URL (":memory:" for none); None for PostgreSQL."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        return None
    return unquote(parts.path[1:]) if parts.path != "/:memory:" else ":memory:"


def give_to_database_owner(fd: int, database: str) -> None:
    """A file made beside the database by root (an admin's command) gets the
    database's owner, or its folder's: the daemon, running as its own user,
    must open it later. SQLite does the same with its -wal and -shm files."""
    if os.geteuid() != 0:
        return
    try:
        owner = os.stat(database)
    except FileNotFoundError:
        owner = os.stat(os.path.dirname(os.path.abspath(database)))
    os.fchown(fd, owner.st_uid, owner.st_gid)


def database_for_url(url: str, replayable: bool = False) -> pw.Database:
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = sqlite_file(url)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # IMMEDIATE: a write transaction takes the lock when it begins, so two
        # writers queue on busy_timeout instead of failing on lock upgrade.
        pragmas = {**SQLITE_PRAGMAS, "synchronous": 1} if replayable else SQLITE_PRAGMAS
        return pw.SqliteDatabase(path, pragmas=pragmas, lock_type="IMMEDIATE")
    options = dict(parse_qsl(parts.query))
    # READ COMMITTED whatever the server's default: a statement sees what
    # committed before it began (the duplicate check after its lock relies on it).
    return ReconnectingPostgresqlDatabase(
        unquote(parts.path.lstrip("/")), user=unquote(parts.username or "") or None,
        password=unquote(parts.password or "") or None, host=parts.hostname or None,
        port=parts.port or None, connect_timeout=int(options.pop("connect_timeout", 5)),
        isolation_level=ISOLATION_LEVEL_READ_COMMITTED, **options)


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
