"""A PostgreSQL cluster of the test's own, to stop, start and crash at will.

The shared server on 127.0.0.1:5432 is never touched: tests that take the
database away from the daemon run against a cluster made for them — `initdb`
into a folder under /tmp, `pg_ctl` on a free loopback port, no Unix socket,
trust authentication for 127.0.0.1 only. As root the server runs as the
`postgres` user (PostgreSQL refuses to run as root), otherwise as whoever
runs the tests. Its log is copied to the test's tmp folder when it ends.

Use from a test module::

    from private_pg import private_pg, private_pg_cluster   # the fixtures

    def test_x(private_pg):
        url = private_pg.url               # a database of the test's own
        private_pg.restart("immediate")    # a crash, then crash recovery
        private_pg.stop(); ...; private_pg.start()
        private_pg.terminate_backends()    # every client connection to it cut

One cluster serves a test module (`private_pg_cluster`; initdb takes
seconds on a busy machine); each test gets a fresh, empty database in it
and finds the server running, whatever the test before did to it.

Binaries come from /usr/lib/postgresql/<newest>/bin, or from `pg_config
--bindir`. Where none are installed the fixture skips — except in CI
(CI=true) or with ORDERMAIL_REQUIRE_SERVERS=1, where that is a failure.
Durability settings are relaxed (fsync off): a crash of the server process
(`-m immediate`) loses nothing the OS holds; only a power cut would.
"""
from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import psycopg2
import pytest

from realservers import free_port, unavailable

HOST = "127.0.0.1"
START_SECONDS = 60
SERVER_SETTINGS = {
    "listen_addresses": HOST,
    "unix_socket_directories": "",
    "fsync": "off",                 # see the module docstring
    "full_page_writes": "off",
    "max_connections": "100",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
}


def postgres_bindir() -> Path | None:
    """The newest installed server's bin folder (with initdb and pg_ctl), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip())
        if (bindir / "initdb").exists():
            return bindir
    return None


class PrivatePostgres:
    """One private cluster: its folder, port and server; started by `private_pg`."""

    def __init__(self, bindir: Path, root: Path, port: int, keep: Path):
        self.bindir, self.root, self.port, self.keep = bindir, root, port, keep
        self.data = root / "data"
        self.logfile = root / "server.log"
        self.database = "postgres"           # the test's own, once `new_database` made it
        self._user = "postgres" if os.geteuid() == 0 else None
        self._databases = itertools.count(1)

    @property
    def url(self) -> str:
        """ordermail's URL of the test's database (a short connect timeout: the server comes and goes)."""
        return f"postgresql://postgres@{HOST}:{self.port}/{self.database}?connect_timeout=3"

    @property
    def dsn(self) -> str:
        return f"host={HOST} port={self.port} user=postgres dbname={self.database} connect_timeout=3"

    def new_database(self) -> str:
        """A fresh, empty database; from now on `url`, `sql` and the backends are about it."""
        name = f"ordermail_{next(self._databases)}"
        self.sql(f"CREATE DATABASE {name}", database="postgres")
        self.database = name
        return name

    # ---- life cycle ---------------------------------------------------------------------

    def create(self) -> None:
        self.data.mkdir()
        if self._user:
            account = pwd.getpwnam(self._user)
            os.chown(self.root, account.pw_uid, account.pw_gid)
            os.chown(self.data, account.pw_uid, account.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync",
                  "-E", "UTF8", "--locale=C")
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("".join(f"{key} = '{value}'\n" for key, value in
                               {**SERVER_SETTINGS, "port": str(self.port)}.items()))
        self.start()

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", str(START_SECONDS),
                  "start")
        self.wait_ready()

    def stop(self, mode: str = "fast") -> None:
        """`mode`: smart, fast (ends every session, rolls back) or immediate (a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", str(START_SECONDS), "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def running(self) -> bool:
        result = self._run("pg_ctl", "-D", str(self.data), "status", check=False)
        return result.returncode == 0

    def wait_ready(self, seconds: float = START_SECONDS) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                psycopg2.connect(f"host={HOST} port={self.port} user=postgres dbname=postgres connect_timeout=2").close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"private PostgreSQL on port {self.port} did not come up:\n"
                                         + self.log_tail())
                time.sleep(0.1)

    def destroy(self) -> None:
        if self.data.exists() and self.running():
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop("immediate")
        with contextlib.suppress(OSError):
            shutil.copy(self.logfile, self.keep / "postgresql.log")
        shutil.rmtree(self.root, ignore_errors=True)

    # ---- what tests do to it ----------------------------------------------------------------

    def sql(self, statement: str, params=(), *, database: str | None = None) -> list[tuple]:
        """Run one statement in autocommit on a connection of its own; its rows (if any)."""
        conn = psycopg2.connect(f"host={HOST} port={self.port} user=postgres "
                                f"dbname={database or self.database} connect_timeout=3")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(statement, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def backends(self) -> list[tuple[int, str, str]]:
        """(pid, state, query) of every client connection to the test's database but this one."""
        return self.sql("SELECT pid, state, query FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()", (self.database,))

    def terminate_backends(self) -> int:
        """Cut every other client's connection (pg_terminate_backend), as an admin or a
        failover would, and wait until they have ended; returns how many were cut."""
        rows = self.sql("SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()", (self.database,))
        cut = {pid for pid, done in rows if done}
        deadline = time.monotonic() + START_SECONDS
        while cut & {pid for pid, _state, _query in self.backends()}:
            assert time.monotonic() < deadline, "terminated backends did not end"
            time.sleep(0.05)
        return len(cut)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no server log: {exc})"

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bindir / program), *args]
        if self._user:
            command = ["runuser", "-u", self._user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=START_SECONDS + 30,
                                cwd=self.root)
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, command,
                                                result.stdout, result.stderr + "\n" + self.log_tail())
        return result


def start_private_pg(keep: Path) -> PrivatePostgres:
    """Make and start a cluster (its log is copied to `keep` at the end); skip
    (or fail in CI) without the server binaries."""
    bindir = postgres_bindir()
    if bindir is None:
        unavailable("PostgreSQL server binaries not installed (no initdb under /usr/lib/postgresql/*/bin "
                    "nor from pg_config); install the postgresql package to enable")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        unavailable("runuser not found: needed to run a private PostgreSQL as the postgres user")
    root = Path(tempfile.mkdtemp(prefix="ordermail-pg-", dir="/tmp"))
    os.chmod(root, 0o755)
    server = PrivatePostgres(bindir, root, free_port(), keep)
    try:
        server.create()
    except BaseException:
        server.destroy()
        raise
    return server


@pytest.fixture(scope="module")
def private_pg_cluster(tmp_path_factory) -> Iterator[PrivatePostgres]:
    """A private PostgreSQL cluster for a test module."""
    server = start_private_pg(tmp_path_factory.mktemp("postgresql"))
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def private_pg(private_pg_cluster) -> PrivatePostgres:
    """The module's cluster, running, with a fresh empty database for this test."""
    if not private_pg_cluster.running():
        private_pg_cluster.start()
    private_pg_cluster.new_database()
    return private_pg_cluster
