"""`ordermail backup PATH` and `ordermail restore PATH`: the database as one file.

Backup (SQLite): SQLite's online backup API (sqlite3's `Connection.backup`)
copies every page in one step, that is in one read transaction. Under WAL
the daemon goes on writing meanwhile, and the copy is the database as it was
at one moment: each transaction in it whole or not at all. The copy is made
under a temporary name beside PATH, checked (`PRAGMA quick_check`), made a
self-contained file (rollback journal, not WAL), synced, and only then given
its name: PATH is either absent or a complete backup. An existing PATH is
left alone unless `--force`.

Restore (SQLite): refused while any process has the database open — every
ordermail process holds a shared lock on `<database>-open.lock` while it
does (the kernel drops it when the process ends, however it ends), and
restore takes it exclusively and keeps it until done, so nothing opens the
database halfway. PATH must be an ordermail database this release can read:
its schema history names no migration unknown here (an older one is brought
up to date when ordermail next opens it). The database it replaces is kept
beside it as `<database>.before-restore-<time>`.

PostgreSQL: the server makes consistent copies itself. Both commands print
the pg_dump or pg_restore command for the configured database and exit 2,
having written nothing, so a script that checks the exit code never takes
that for a backup.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import shlex
import sqlite3
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from daemon.config import Settings
from daemon.errors import ConfigError, InputError, OrdermailError, StoreTooNew
from daemon.store.database import MIGRATIONS_DIR, WriterLock, give_to_database_owner, redact, sqlite_file

HISTORY_TABLE = "schema_migration"      # playhouse.migrations' record of the applied scripts


class DatabaseInUse(OrdermailError):
    """Restore found a process with the database open."""


def backup(settings: Settings, target: Path, *, force: bool = False) -> str:
    """Copy the configured SQLite database to `target`; returns the line to print."""
    database = _sqlite_database(settings, "backup", postgres_command=lambda url: pg_dump_command(url, target))
    if target.exists() and not force:
        raise OrdermailError(f"{target} exists; name another file, or pass --force to replace it")
    if target.is_dir():
        raise InputError(f"{target} is a folder; name the backup file")
    if not Path(database).is_file():
        raise OrdermailError(f"there is no database {database} to back up")
    users = WriterLock(database)
    users.hold_in_use()                 # a restore does not replace the database under us
    try:
        with _source(database) as source:
            _copy_into_place(source, target, replace=force)
    finally:
        users.close()
    return f"backup of {database} written to {target}: {describe(target)}"


def restore(settings: Settings, source: Path) -> str:
    """Replace the configured SQLite database by a copy of `source`; returns the line to print."""
    database = _sqlite_database(settings, "restore", postgres_command=lambda url: pg_restore_command(url, source))
    if not source.is_file():
        raise InputError(f"{source} is not a file")
    check_backup(source)
    Path(database).parent.mkdir(parents=True, exist_ok=True)      # a new machine: nothing there yet
    users = WriterLock(database)
    try:
        _lock_out_everyone(users, database)
        kept = _put_aside(database)
        with _source(str(source)) as copy_from:
            _copy_into_place(copy_from, Path(database), replace=True)
    finally:
        users.close()
    before = f"; the database before is kept as {kept}" if kept else ""
    return f"restored {database} from {source}: {describe(Path(database))}{before}"


def check_backup(path: Path) -> list[str]:
    """The migrations applied in `path`; raises unless it is an ordermail database this release can read."""
    try:
        with contextlib.closing(_connect(path, "ro")) as db:
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise InputError(f"{path} is damaged (PRAGMA quick_check fails)")
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not {HISTORY_TABLE, "orders", "event"} <= tables:
                raise InputError(f"{path} is an SQLite database, but not ordermail's")
            applied = [row[0] for row in db.execute(f"SELECT name FROM {HISTORY_TABLE} ORDER BY name")]
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{path} is not an SQLite database ({exc})") from None
    known = {script.stem for script in MIGRATIONS_DIR.glob("[0-9]*.py")}
    unknown = [name for name in applied if name not in known]
    if unknown:
        raise StoreTooNew(f"{path} was written by a newer ordermail (schema {unknown[-1]}); "
                          "restore it with that release or a later one")
    return applied


def describe(path: Path) -> str:
    """"1.2 MB, schema 0010_inbound_content_key, 42 orders"."""
    with contextlib.closing(_connect(path, "ro")) as db:
        schema = db.execute(f"SELECT max(name) FROM {HISTORY_TABLE}").fetchone()[0]
        orders = db.execute('SELECT count(*) FROM orders').fetchone()[0]
    return f"{path.stat().st_size / 1e6:.1f} MB, schema {schema}, {orders} orders"


# ---- SQLite -------------------------------------------------------------------------

def _sqlite_database(settings: Settings, command: str, postgres_command) -> str:
    url = settings.database.url
    database = sqlite_file(url)
    if database is None:
        print(postgres_command(url))
        raise ConfigError(f"{command} copies SQLite databases only; for PostgreSQL run the command above "
                          "(the password from ~/.pgpass or PGPASSWORD)")
    if database == ":memory:":
        raise ConfigError(f"[database] url {url!r} is a database in memory: nothing to {command}")
    return database


def _connect(path: Path | str, mode: str) -> sqlite3.Connection:
    """A connection that never creates a file (mode "ro" or "rw")."""
    return sqlite3.connect(f"file:{quote(str(Path(path).resolve()))}?mode={mode}", uri=True, timeout=30)


@contextlib.contextmanager
def _source(path: str):
    db = _connect(path, "ro")
    try:
        yield db
    finally:
        db.close()


def _copy_into_place(source: sqlite3.Connection, target: Path, *, replace: bool) -> None:
    """Copy under a temporary name beside `target`, check, sync, then name it `target`."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.part")
    temporary.unlink(missing_ok=True)
    try:
        copy = sqlite3.connect(temporary)
        try:
            source.backup(copy)             # every page in one step: one read transaction, one moment
            copy.execute("PRAGMA journal_mode = DELETE")    # one self-contained file, no -wal beside it
            if copy.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise OrdermailError(f"the copy in {temporary} fails PRAGMA quick_check; nothing written")
        finally:
            copy.close()
        _sync_and_name(temporary, target, replace=replace)
    finally:
        temporary.unlink(missing_ok=True)


def _sync_and_name(temporary: Path, target: Path, *, replace: bool) -> None:
    fd = os.open(temporary, os.O_RDONLY)
    try:
        give_to_database_owner(fd, str(target))
        os.fsync(fd)
    finally:
        os.close(fd)
    if replace:
        os.replace(temporary, target)
    else:
        try:
            os.link(temporary, target)      # fails if `target` appeared meanwhile: never overwritten
        except FileExistsError:
            raise OrdermailError(f"{target} exists; name another file, or pass --force to replace it") from None
    _sync_folder(target.parent)


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock_out_everyone(users: WriterLock, database: str) -> None:
    if not users.lock_out_users():
        holders = ", ".join(_holders(f"{database}-open.lock")) or "another process"
        raise DatabaseInUse(f"{database} is open in {holders}; stop ordermail (the daemon, the web app, "
                            "running commands) before restoring") from None


def _holders(lock_file: str) -> list[str]:
    """"pid 4711 (ordermail serve)" for each process with a lock on `lock_file` (from /proc/locks)."""
    try:
        lock = os.stat(lock_file)
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    wanted = f"{os.major(lock.st_dev):02x}:{os.minor(lock.st_dev):02x}:{lock.st_ino}"
    holders = {fields[4] for fields in map(str.split, lines)
               if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == wanted}
    return [f"pid {pid} ({_command_line(pid)})" for pid in sorted(holders, key=int)]


def _command_line(pid: str) -> str:
    """"ordermail serve --config …", or "a worker process", as far as /proc tells."""
    try:
        words = [w.decode(errors="replace") for w in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if w]
    except OSError:
        return "ended meanwhile"
    if any("spawn_main" in word for word in words):
        return "a worker process"
    start = next((i for i, w in enumerate(words) if w.endswith(("/ordermail", "daemon.cli.main"))), None)
    shown = ["ordermail", *words[start + 1:]] if start is not None else words
    return " ".join(shown)[:80]


def _put_aside(database: str) -> str | None:
    """Keep the database being replaced, whole (its WAL folded in), as `<database>.before-restore-<time>`."""
    if not Path(database).exists():
        return None
    with contextlib.suppress(sqlite3.DatabaseError):      # a damaged file is kept as it is
        with contextlib.closing(_connect(database, "rw")) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    kept = f"{database}.before-restore-{dt.datetime.now():%Y%m%dT%H%M%S}"
    os.rename(database, kept)
    for suffix in ("-wal", "-shm"):         # never left beside the new file: SQLite would apply them to it
        with contextlib.suppress(FileNotFoundError):
            os.rename(database + suffix, kept + suffix)
    return kept


# ---- PostgreSQL ---------------------------------------------------------------------

def pg_dump_command(url: str, target: Path) -> str:
    return shlex.join(["pg_dump", "--format=custom", f"--file={target}", *_pg_schema(url), _pg_uri(url)])


def pg_restore_command(url: str, source: Path) -> str:
    return shlex.join(["pg_restore", "--clean", "--if-exists", "--no-owner", *_pg_schema(url),
                       f"--dbname={_pg_uri(url)}", str(source)])


def _pg_uri(url: str) -> str:
    """The URL as libpq takes it, without the password (pg_dump asks ~/.pgpass or PGPASSWORD)."""
    parts = urlsplit(redact(url).replace(":***@", "@"))
    return urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, ""))


def _pg_schema(url: str) -> list[str]:
    """--schema=NAME when the URL puts ordermail in a schema of its own (options=-c search_path=NAME)."""
    options = dict(parse_qsl(urlsplit(url).query)).get("options", "")
    for word in options.replace("-c ", "-c").split():
        if word.startswith("-csearch_path="):
            return [f"--schema={word.partition('=')[2].split(',')[0]}"]
    return []

