"""Real, private mail servers for the tests: Dovecot IMAP, Postfix, swaks.

Each server runs from its own configuration in a folder of its own under
/tmp (ordermail-<server>-XXXX), listens only on 127.0.0.1 on a free port, and
is stopped when its fixture ends; its folder is removed then, after its
configs and logs were copied to a pytest tmp folder (<server>N) for
post-mortems. (Not in pytest's tmp itself: the servers' own users must walk
down to their files, and every pytest session that starts re-tightens
/tmp/pytest-of-<user> to 0700, concurrent sessions included.)
Nothing touches the system's own services or configuration: as root, Postfix
needs no alternate_config_directories entry in /etc/postfix/main.cf.

Install the servers with ``bash .ci/install-mail-servers`` (Debian packages
dovecot-core, dovecot-imapd, postfix, swaks). Where a server is not
installed its fixture skips the test with that hint -- except in CI (CI=true)
or with ORDERMAIL_REQUIRE_SERVERS=1, where that is a failure.

Use from a test module (or a conftest) by importing the fixtures::

    from realservers import dovecot, dovecot_account, postfix_factory, lmtp_sink, swaks

Fixtures
    dovecot            (session)  DovecotServer -- host, port, user, password,
                                  append(), list_messages(), flags(), add_user();
                                  implicit TLS too on tls_port, with a self-signed
                                  certificate made for the session (ca_file)
    dovecot_account    (function) a fresh DovecotAccount on that server
    postfix_factory    (module)   callable(lmtp_port, **options) -> PostfixRelay
    lmtp_sink          (function) LMTPSink: aiosmtpd LMTP server collecting envelopes
    swaks              (session)  callable(*args, server=..., timeout=30) -> CompletedProcess

Servers need root (Dovecot drops to its own users, Postfix to postfix).
"""
from __future__ import annotations

import contextlib
import imaplib
import itertools
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pytest

HOST = "127.0.0.1"
INSTALL_HINT = "run .ci/install-mail-servers to enable"
START_TIMEOUT = 30.0  # seconds a server gets to answer on its port
STOP_TIMEOUT = 15.0
# Unix socket paths are limited to 107 bytes; Dovecot and Postfix put their
# sockets a few levels below their folders.
MAX_SOCKET_DIR = 60


# --------------------------------------------------------------------------- #
# skip / fail, ports, readiness
# --------------------------------------------------------------------------- #

def servers_required() -> bool:
    """In CI (CI=true) or with ORDERMAIL_REQUIRE_SERVERS=1 a missing server fails."""
    return os.environ.get("CI") == "true" or os.environ.get("ORDERMAIL_REQUIRE_SERVERS") == "1"


def unavailable(message: str) -> None:
    """Skip the test -- or fail it where the servers are required."""
    if servers_required():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_binary(name: str, what: str) -> str:
    """Absolute path of `name` on PATH, or skip/fail with the install hint."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{what} not installed ({name} not found on PATH); {INSTALL_HINT}")
    return path


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        unavailable(f"{what} needs root to run privately (it drops to its own system users)")


def free_port(host: str = HOST) -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_banner(host: str, port: int, prefix: bytes, *, name: str,
                    timeout: float = START_TIMEOUT, goodbye: bytes = b"",
                    alive: Callable[[], bool] = lambda: True,
                    log_tail: Callable[[], str] = lambda: "") -> None:
    """Poll host:port until the server greets with `prefix` (bounded), then say `goodbye`.

    Fails the test with the server's log tail when the time runs out or when
    `alive()` says the server process is gone.
    """
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while time.monotonic() < deadline:
        if not alive():
            pytest.fail(f"{name} exited before it answered on {host}:{port}.\n"
                        f"--- log tail ---\n{log_tail()}", pytrace=False)
        try:
            with socket.create_connection((host, port), timeout=1.0) as sock:
                sock.settimeout(max(0.5, min(5.0, deadline - time.monotonic())))
                greeting = sock.recv(1024)
                if greeting.startswith(prefix) and goodbye:
                    with contextlib.suppress(OSError):
                        sock.sendall(goodbye)
                        sock.recv(1024)
            if greeting.startswith(prefix):
                return
            last_error = f"unexpected greeting {greeting[:200]!r}"
        except OSError as exc:
            last_error = str(exc) or type(exc).__name__
        time.sleep(0.1)
    pytest.fail(f"{name} did not answer on {host}:{port} within {timeout:.0f}s ({last_error}).\n"
                f"--- log tail ---\n{log_tail()}", pytrace=False)


def wait_port_closed(host: str, port: int, timeout: float = STOP_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not port_open(host, port, timeout=0.2):
            return True
        time.sleep(0.1)
    return False


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _make_traversable(path: Path) -> None:
    """Let the servers' own users (dovecot, postfix) walk down to `path`:
    add the search bit (o+x, no listing) to each folder we own that lacks it."""
    uid = os.geteuid()
    for folder in [path, *path.parents]:
        st = folder.stat()
        if not st.st_mode & 0o001 and st.st_uid == uid:
            os.chmod(folder, (st.st_mode & 0o7777) | 0o001)


@dataclass
class ServerDirs:
    """Where one server lives (`run`, removed at stop) and what is kept of it (`keep`)."""

    run: Path
    keep: Path

    @classmethod
    def create(cls, tmp_path_factory: pytest.TempPathFactory, name: str) -> ServerDirs:
        keep = tmp_path_factory.mktemp(name)
        parent = tempfile.gettempdir()
        if len(parent) > MAX_SOCKET_DIR - 30:
            parent = "/tmp"
        run = Path(tempfile.mkdtemp(prefix=f"ordermail-{name}-", dir=parent))
        os.chmod(run, 0o711)
        _make_traversable(run)
        (keep / "server-dir.txt").write_text(f"{run}\n")
        return cls(run, keep)

    def archive_and_remove(self) -> None:
        """Copy the logs and configs to `keep`, then remove `run`."""
        if not self.run.exists():
            return
        for path in [*self.run.iterdir(), *(self.run / "etc").glob("*")]:
            if path.is_file() and not path.is_symlink() and path.suffix in (".log", ".conf", ".cf"):
                with contextlib.suppress(OSError):
                    shutil.copy(path, self.keep / path.name)
        shutil.rmtree(self.run, ignore_errors=True)


def _terminate_group(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, then SIGKILL, the process group a server was started in."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie left to an init that does not reap counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


# --------------------------------------------------------------------------- #
# Dovecot IMAP
# --------------------------------------------------------------------------- #

DOVECOT_LIBEXEC_DIRS = ("/usr/lib/dovecot", "/usr/libexec/dovecot")


def dovecot_version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", out.strip())
    if not match:
        raise RuntimeError(f"cannot read the Dovecot version from {out!r}")
    return tuple(int(part) for part in match.groups() if part is not None)


def dovecot_config(*, version: tuple[int, ...], port: int, base_dir: Path, state_dir: Path,
                   log_path: Path, users_dir: Path, mail_root: Path, tls_port: int = 0,
                   cert: Path | None = None, key: Path | None = None) -> str:
    """A self-contained Dovecot config for a private IMAP server on 127.0.0.1:`port`.

    With `tls_port` it also serves implicit TLS (imaps) there, with `cert` and `key` (PEM).
    """
    if tls_port:
        ssl = "ssl = yes\n" + (f"ssl_server_cert_file = {cert}\nssl_server_key_file = {key}\n"
                                if version >= (2, 4) else f"ssl_cert = <{cert}\nssl_key = <{key}\n")
        imaps = f"address = {HOST}\n    port = {tls_port}"
    else:
        ssl, imaps = "ssl = no\n", "port = 0"
    common = f"""\
protocols = imap
listen = {HOST}
base_dir = {base_dir}
state_dir = {state_dir}
log_path = {log_path}
info_log_path = {log_path}
{ssl}auth_mechanisms = plain login
auth_failure_delay = 0
# imap-login refuses to run as root; mail must not belong to root.
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 1
service imap-login {{
  inet_listener imap {{
    address = {HOST}
    port = {port}
  }}
  inet_listener imaps {{
    {imaps}
  }}
}}
protocol imap {{
  mail_max_userip_connections = 100
}}
"""
    if version >= (2, 4):
        # Dovecot 2.4 renamed most settings (Debian 13 ships 2.4).
        return f"""\
dovecot_config_version = 2.4.0
dovecot_storage_version = 2.4.0
{common}auth_allow_cleartext = yes
mail_driver = maildir
mail_path = ~/Maildir
passdb passwd-file {{
  passwd_file_path = {users_dir}/%{{user}}
}}
userdb static {{
  fields {{
    uid = dovecot
    gid = dovecot
    home = {mail_root}/%{{user}}
  }}
}}
"""
    return f"""\
{common}disable_plaintext_auth = no
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users_dir}/%u
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={mail_root}/%u
}}
"""


_FETCH_RE = re.compile(rb"UID (\d+)|FLAGS \(([^)]*)\)")


@dataclass
class ImapMessage:
    uid: int
    flags: frozenset[str]
    raw: bytes


@dataclass
class DovecotAccount:
    """One mailbox user on a private Dovecot; the helpers use stdlib imaplib (plain, on `port`)."""

    host: str
    port: int
    user: str
    password: str
    tls_port: int = 0       # implicit TLS (imaps) too, where the server was started with tls=True
    ca_file: str = ""       # then: its self-signed certificate (PEM), the CA to trust

    @contextlib.contextmanager
    def imap(self, folder: str | None = None, *, readonly: bool = False) -> Iterator[imaplib.IMAP4]:
        """A logged-in imaplib connection (with `folder` selected if given)."""
        conn = imaplib.IMAP4(self.host, self.port, timeout=15)
        try:
            conn.login(self.user, self.password)
            if folder is not None:
                typ, data = conn.select(_quote(folder), readonly=readonly)
                if typ != "OK":
                    raise AssertionError(f"SELECT {folder} failed: {data}")
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    def create_folder(self, folder: str) -> None:
        with self.imap() as conn:
            typ, data = conn.create(_quote(folder))
            if typ != "OK" and b"exists" not in b" ".join(data or []).lower():
                raise AssertionError(f"CREATE {folder} failed: {data}")

    def append(self, raw: bytes, folder: str = "INBOX", flags: Iterable[str] = ()) -> int:
        """APPEND `raw` to `folder` (created if missing); returns the new UID."""
        if isinstance(raw, str):
            raw = raw.encode()
        raw = re.sub(rb"\r?\n", b"\r\n", raw)
        flag_list = "(" + " ".join(flags) + ")" if flags else None
        with self.imap() as conn:
            if folder.upper() != "INBOX":
                conn.create(_quote(folder))  # NO when it exists: fine
            typ, data = conn.append(_quote(folder), flag_list, None, raw)
            if typ != "OK":
                raise AssertionError(f"APPEND to {folder} failed: {data}")
        match = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
        if not match:
            raise AssertionError(f"APPEND gave no APPENDUID (UIDPLUS missing?): {data}")
        return int(match.group(1))

    def list_messages(self, folder: str = "INBOX") -> list[ImapMessage]:
        """All messages in `folder` with UID, flags and raw bytes (read-only, flags untouched)."""
        with self.imap(folder, readonly=True) as conn:
            typ, data = conn.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
            if typ != "OK":
                raise AssertionError(f"FETCH in {folder} failed: {data}")
        messages = []
        for item in data:
            if not isinstance(item, tuple):
                continue  # the closing b')' of each literal
            head, raw = item
            uid = flags = None
            for m in _FETCH_RE.finditer(head):
                if m.group(1):
                    uid = int(m.group(1))
                else:
                    flags = frozenset(m.group(2).decode().split())
            if uid is None:
                continue
            messages.append(ImapMessage(uid, flags or frozenset(), raw))
        return sorted(messages, key=lambda msg: msg.uid)

    def flags(self, uid: int, folder: str = "INBOX") -> frozenset[str]:
        """The flags of message `uid` in `folder`."""
        with self.imap(folder, readonly=True) as conn:
            typ, data = conn.uid("FETCH", str(uid), "(FLAGS)")
        if typ != "OK" or not data or data[0] is None:
            raise AssertionError(f"no message with UID {uid} in {folder}: {data}")
        match = re.search(rb"FLAGS \(([^)]*)\)", data[0])
        return frozenset(match.group(1).decode().split()) if match else frozenset()

    def folders(self) -> list[str]:
        with self.imap() as conn:
            typ, data = conn.list()
        names = []
        for line in data or []:
            match = re.search(rb'\) "[^"]*" (.*)$', line or b"")
            if match:
                names.append(match.group(1).decode().strip('"'))
        return names


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class DovecotServer(DovecotAccount):
    """A private Dovecot IMAP server; it is also the account of its default user."""

    binary: str = ""
    version: tuple[int, ...] = ()
    dirs: ServerDirs | None = field(default=None, repr=False)
    root: Path = Path()
    config_path: Path = Path()
    log_path: Path = Path()
    proc: subprocess.Popen | None = field(default=None, repr=False)
    _counter: Iterator[int] = field(default_factory=itertools.count, repr=False)

    @property
    def users_dir(self) -> Path:
        return self.root / "users"

    @property
    def mail_root(self) -> Path:
        return self.root / "mail"

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines) + "\n--- console ---\n" + _tail(self.root / "console.log", lines)

    def add_user(self, user: str | None = None, password: str | None = None) -> DovecotAccount:
        """A new account on this server, usable at once.

        Each user has a passwd-file of its own (users/<name>): Dovecot re-reads
        a changed passwd-file at most once a second, but opens a new one at
        once. Names are letters, digits and ".-_@"; passwords cannot change.
        """
        user = user or f"user{next(self._counter)}-{secrets.token_hex(3)}"
        password = password or secrets.token_hex(8)
        if not re.fullmatch(r"[A-Za-z0-9.\-_@]+", user) or user.startswith("."):
            raise ValueError(f"unusable IMAP user name {user!r}")
        path = self.users_dir / user
        if path.exists():
            raise ValueError(f"IMAP user {user!r} exists already")
        tmp = self.users_dir / f".{user}.new"
        tmp.write_text(f"{user}:{{PLAIN}}{password}\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return DovecotAccount(self.host, self.port, user, password, self.tls_port, self.ca_file)

    def start(self) -> None:
        with (self.root / "console.log").open("ab") as console:
            self.proc = subprocess.Popen(
                [self.binary, "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True)
        wait_for_banner(self.host, self.port, b"* OK", name="Dovecot", goodbye=b"a LOGOUT\r\n",
                        alive=lambda: self.proc.poll() is None, log_tail=self.log_tail)

    def stop(self) -> None:
        """SIGTERM the master by the PID in base_dir/master.pid; wait until it is gone.

        Then remove its folder (mail included), keeping logs and config.
        """
        if self.proc is not None:
            pid_file = self.root / "run" / "master.pid"
            try:
                pid = int(pid_file.read_text().strip())
            except (OSError, ValueError):
                pid = self.proc.pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                _terminate_group(self.proc)
            deadline = time.monotonic() + STOP_TIMEOUT
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            wait_port_closed(self.host, self.port)
            self.proc = None
        if self.dirs is not None:
            self.dirs.archive_and_remove()


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A fresh self-signed certificate (its own CA) for 127.0.0.1 and localhost: (cert, key), PEM.

    Valid two days; subjectAltName IP:127.0.0.1 and DNS:localhost, so a client
    that verifies host names accepts it once it trusts the certificate itself.
    """
    openssl = require_binary("openssl", "OpenSSL (openssl)")
    cert, key = folder / "cert.pem", folder / "key.pem"
    made = subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)], capture_output=True, text=True, timeout=60)
    if made.returncode != 0:
        raise RuntimeError(f"openssl could not make a certificate: {made.stderr.strip()}")
    os.chmod(cert, 0o644)
    os.chmod(key, 0o600)
    return cert, key


def start_dovecot(tmp_path_factory: pytest.TempPathFactory, *, user: str = "shop",
                  password: str | None = None, tls: bool = False) -> DovecotServer:
    """Start a private Dovecot IMAP server (skip/fail when not installed).

    With `tls` it serves implicit TLS (imaps) on `tls_port` as well as plain IMAP
    on `port`, with a certificate made now (`ca_file`, see make_certificate).
    .stop() stops it and removes its mail; logs and config stay in a pytest tmp folder.
    """
    binary = require_binary("dovecot", "Dovecot (dovecot-core)")
    libexec = next((Path(d) for d in DOVECOT_LIBEXEC_DIRS if (Path(d) / "imap").exists()), None)
    if libexec is None:
        unavailable(f"Dovecot IMAP (dovecot-imapd) not installed (no imap binary in "
                    f"{' or '.join(DOVECOT_LIBEXEC_DIRS)}); {INSTALL_HINT}")
    require_root("Dovecot")
    dirs = ServerDirs.create(tmp_path_factory, "dovecot")
    root = dirs.run
    for name in ("run", "state", "mail", "users", "tls"):
        (root / name).mkdir()
    shutil.chown(root / "mail", "dovecot", "dovecot")
    os.chmod(root / "mail", 0o750)
    try:
        cert, key = make_certificate(root / "tls") if tls else (None, None)
    except BaseException:
        dirs.archive_and_remove()
        raise
    port, tls_port = free_port(), free_port() if tls else 0
    while tls and tls_port == port:
        tls_port = free_port()
    server = DovecotServer(
        host=HOST, port=port, user=user, password=password or secrets.token_hex(8),
        tls_port=tls_port, ca_file=str(cert or ""),
        binary=binary, version=dovecot_version(binary), dirs=dirs, root=root,
        config_path=root / "dovecot.conf", log_path=root / "dovecot.log")
    server.add_user(server.user, server.password)
    server.config_path.write_text(dovecot_config(
        version=server.version, port=server.port, base_dir=root / "run", state_dir=root / "state",
        log_path=server.log_path, users_dir=server.users_dir, mail_root=server.mail_root,
        tls_port=tls_port, cert=cert, key=key))
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    """A private Dovecot IMAP server for the session (default user "shop"):
    plain IMAP on `port`, implicit TLS on `tls_port` (certificate: `ca_file`).

    Shared by every test: tests that need an empty mailbox use `dovecot_account`.
    """
    server = start_dovecot(tmp_path_factory, tls=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dovecot_account(dovecot: DovecotServer) -> DovecotAccount:
    """A fresh, empty mailbox user on the session's Dovecot."""
    return dovecot.add_user()


# --------------------------------------------------------------------------- #
# Postfix relay in front of an LMTP listener
# --------------------------------------------------------------------------- #

POSTFIX_MASTER_CF = """\
# service    type  private unpriv chroot wakeup maxproc command
{listen} inet  n       -       n       -       -       smtpd
pickup       unix  n       -       n       60      1       pickup
cleanup      unix  n       -       n       -       0       cleanup
qmgr         unix  n       -       n       300     1       qmgr
rewrite      unix  -       -       n       -       -       trivial-rewrite
bounce       unix  -       -       n       -       0       bounce
defer        unix  -       -       n       -       0       bounce
trace        unix  -       -       n       -       0       bounce
verify       unix  -       -       n       -       1       verify
flush        unix  n       -       n       1000?   0       flush
proxymap     unix  -       -       n       -       -       proxymap
showq        unix  n       -       n       -       -       showq
error        unix  -       -       n       -       -       error
retry        unix  -       -       n       -       -       error
discard      unix  -       -       n       -       -       discard
smtp         unix  -       -       n       -       -       smtp
relay        unix  -       -       n       -       -       smtp
lmtp         unix  -       -       n       -       -       lmtp
anvil        unix  -       -       n       -       1       anvil
scache       unix  -       -       n       -       1       scache
postlog      unix-dgram n  -       n       -       1       postlogd
"""


def postfix_main_cf(*, root: Path, port: int, lmtp_host: str, lmtp_port: int,
                    relay_domains: Iterable[str], extra: dict[str, str] | None = None) -> str:
    domains = list(relay_domains)
    transports = ", ".join(f"{d}=lmtp:inet:{lmtp_host}:{lmtp_port}" for d in domains)
    settings = {
        "compatibility_level": "3.6",
        "queue_directory": str(root / "queue"),
        "data_directory": str(root / "data"),
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "myhostname": "relay.ordermail.test",
        "mydomain": "ordermail.test",
        "myorigin": "$myhostname",
        "mydestination": "",
        "local_recipient_maps": "",
        "alias_maps": "",
        "alias_database": "",
        "inet_interfaces": HOST,
        "inet_protocols": "ipv4",
        "mynetworks": "127.0.0.0/8",
        "relay_domains": " ".join(domains),
        "transport_maps": f"inline:{{ {transports} }}",
        # Only the relay domains, also for clients on 127.0.0.1 (no open relay).
        "smtpd_relay_restrictions": "reject_unauth_destination",
        "smtpd_recipient_restrictions": "",
        "smtpd_banner": "$myhostname ESMTP",
        "smtpd_error_sleep_time": "0",
        "biff": "no",
        "maillog_file": "/dev/stdout",
        # Retry a deferred delivery (LMTP listener not up yet) within seconds.
        # Not 1s: queue file times have whole seconds, so a 1s backoff may come
        # due while the delivery agent still holds the file's lock; qmgr then
        # parks the message ("skipped, still being delivered") for 60s.
        "queue_run_delay": "1s",
        "minimal_backoff_time": "2s",
        "maximal_backoff_time": "4s",
        "lmtp_connect_timeout": "5s",
        "delay_warning_time": "0",
    }
    settings.update(extra or {})
    return "".join(f"{key} = {value}\n" for key, value in settings.items())


@dataclass
class PostfixRelay:
    """A private Postfix: SMTP on host:port, relaying its domains to LMTP lmtp_host:lmtp_port."""

    host: str
    port: int
    lmtp_host: str
    lmtp_port: int
    relay_domains: tuple[str, ...]
    dirs: ServerDirs = field(repr=False)
    binary: str = field(repr=False)
    proc: subprocess.Popen | None = field(default=None, repr=False)
    _lines: list[str] = field(default_factory=list, repr=False)
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False)

    @property
    def root(self) -> Path:
        """The instance's folder: etc/ (config_directory), queue/, data/."""
        return self.dirs.run

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def log_path(self) -> Path:
        """A copy of the log, kept after stop (in a pytest tmp folder)."""
        return self.dirs.keep / "postfix.log"

    def log(self) -> str:
        """Everything Postfix logged so far (maillog_file = /dev/stdout, captured)."""
        with self._cond:
            return "".join(self._lines)

    def log_tail(self, lines: int = 40) -> str:
        with self._cond:
            return "".join(self._lines[-lines:]) or "(log is empty)"

    def wait_for_log(self, pattern: str, timeout: float = 15.0) -> re.Match:
        """Wait (bounded) until a log line matches the regex `pattern`; return the match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self._lines[seen:]:
                    match = regex.search(line)
                    if match:
                        return match
                seen = len(self._lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"Postfix logged nothing matching {pattern!r} within "
                                         f"{timeout:.0f}s.\n--- log tail ---\n{self.log_tail()}")
                self._cond.wait(remaining)

    def postfix(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Run `postfix -c CONFIG_DIR ARGS` (e.g. "flush", "status")."""
        return subprocess.run([self.binary, "-c", str(self.config_dir), *args],
                              capture_output=True, text=True, timeout=timeout)

    def _reader(self, stream) -> None:
        with self.log_path.open("a") as copy:
            for raw in iter(stream.readline, b""):
                line = raw.decode(errors="replace")
                copy.write(line)
                copy.flush()
                with self._cond:
                    self._lines.append(line)
                    self._cond.notify_all()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.config_dir), "start-fg"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        threading.Thread(target=self._reader, args=(self.proc.stdout,), daemon=True,
                         name=f"postfix-log-{self.port}").start()
        wait_for_banner(self.host, self.port, b"220", name="Postfix", goodbye=b"QUIT\r\n",
                        alive=lambda: self.proc.poll() is None, log_tail=self.log_tail)

    def stop(self) -> None:
        """`postfix -c DIR stop`, wait for the foreground master, then remove its folder.

        The config and the log stay in a pytest tmp folder.
        """
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.postfix("stop")
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=STOP_TIMEOUT)
            # start-fg runs `master -s` under a shell: signal the whole group, not just the shell.
            _terminate_group(self.proc)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers of the group, if any
            wait_port_closed(self.host, self.port)
            self.proc = None
        self.dirs.archive_and_remove()

    def __enter__(self) -> PostfixRelay:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_postfix(tmp_path_factory: pytest.TempPathFactory, lmtp_port: int, *,
                  lmtp_host: str = HOST, relay_domains: Iterable[str] = ("shop.example",),
                  main_cf: dict[str, str] | None = None) -> PostfixRelay:
    """Start a private Postfix relaying `relay_domains` to LMTP (skip/fail when not installed).

    `main_cf` overrides or adds main.cf settings. Stop it with .stop() (or ``with relay:``).
    """
    binary = require_binary("postfix", "Postfix (postfix)")
    require_root("Postfix")
    dirs = ServerDirs.create(tmp_path_factory, "postfix")
    root = dirs.run
    for name in ("etc", "queue", "data"):
        (root / name).mkdir()
    shutil.chown(root / "data", "postfix", "postfix")
    port = free_port()
    relay = PostfixRelay(host=HOST, port=port, lmtp_host=lmtp_host, lmtp_port=lmtp_port,
                         relay_domains=tuple(relay_domains), dirs=dirs, binary=binary)
    (root / "etc" / "main.cf").write_text(postfix_main_cf(
        root=root, port=port, lmtp_host=lmtp_host, lmtp_port=lmtp_port,
        relay_domains=relay.relay_domains, extra=main_cf))
    (root / "etc" / "master.cf").write_text(POSTFIX_MASTER_CF.format(listen=f"{HOST}:{port}"))
    try:
        relay.start()
    except BaseException:
        relay.stop()
        raise
    return relay


@pytest.fixture(scope="module")
def postfix_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., PostfixRelay]]:
    """Start private Postfix relays: ``postfix_factory(lmtp_port, relay_domains=..., main_cf=...)``.

    Calls with the same arguments share one running Postfix; all are stopped at
    the end of the module (or earlier with relay.stop() / ``with relay:``).
    """
    started: dict[tuple, PostfixRelay] = {}

    def make(lmtp_port: int, *, lmtp_host: str = HOST,
             relay_domains: Iterable[str] = ("shop.example",),
             main_cf: dict[str, str] | None = None) -> PostfixRelay:
        domains = tuple(relay_domains)
        key = (lmtp_host, lmtp_port, domains, tuple(sorted((main_cf or {}).items())))
        relay = started.get(key)
        if relay is None or relay.proc is None or relay.proc.poll() is not None:
            if relay is not None:
                relay.stop()
            relay = started[key] = start_postfix(
                tmp_path_factory, lmtp_port, lmtp_host=lmtp_host, relay_domains=domains,
                main_cf=main_cf)
        return relay

    try:
        yield make
    finally:
        for relay in started.values():
            relay.stop()


# --------------------------------------------------------------------------- #
# LMTP sink (aiosmtpd)
# --------------------------------------------------------------------------- #

@dataclass
class Envelope:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


class LMTPSink:
    """An aiosmtpd LMTP server in a thread that accepts and records every message."""

    def __init__(self, host: str = HOST, port: int | None = None) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.lmtp import LMTP

        self.host = host
        self.port = port or free_port(host)
        self.envelopes: list[Envelope] = []
        self._cond = threading.Condition()
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd API)
                data = envelope.original_content or envelope.content
                if isinstance(data, str):
                    data = data.encode()
                with sink._cond:
                    sink.envelopes.append(Envelope(envelope.mail_from, list(envelope.rcpt_tos), data))
                    sink._cond.notify_all()
                # LMTP answers DATA once per recipient (RFC 2033); aiosmtpd 1.4
                # pushes the one string the handler returns, so return them all.
                return "\r\n".join(f"250 2.0.0 <{rcpt}> delivered" for rcpt in envelope.rcpt_tos)

        # aiosmtpd 1.4 has no server_class argument: the factory picks the protocol.
        class LMTPController(Controller):
            def factory(self):
                return LMTP(self.handler, **self.SMTP_kwargs)

        self._controller = LMTPController(Handler(), hostname=host, port=self.port)

    def start(self) -> LMTPSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> LMTPSink:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def wait_for(self, count: int = 1, timeout: float = 20.0,
                 match: Callable[[Envelope], bool] = lambda envelope: True) -> list[Envelope]:
        """Wait (bounded) until at least `count` messages satisfying `match` arrived; return those."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(found := [e for e in self.envelopes if match(e)]) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"LMTP sink on {self.host}:{self.port} got {len(found)} of "
                                         f"{count} expected messages in {timeout:.0f}s "
                                         f"({len(self.envelopes)} in all)")
                self._cond.wait(remaining)
            return found


@pytest.fixture
def lmtp_sink() -> Iterator[LMTPSink]:
    """A running LMTP sink on a free 127.0.0.1 port, recording what it receives."""
    pytest.importorskip("aiosmtpd")
    with LMTPSink() as sink:
        yield sink


# --------------------------------------------------------------------------- #
# swaks
# --------------------------------------------------------------------------- #

def run_swaks(*args: str, server: Any = None, timeout: float = 30.0,
              binary: str | None = None) -> subprocess.CompletedProcess:
    """Run swaks with `args` against `server` ((host, port) or an object with .host/.port).

    Returns the CompletedProcess (text; stderr merged into stdout, since swaks
    prints the conversation on both). Without `server`, args must name one
    (--server/-s): swaks must never look up a real MX.
    """
    binary = binary or require_binary("swaks", "swaks (swaks)")
    argv = [binary]
    if server is not None:
        host, port = (server.host, server.port) if hasattr(server, "host") else server
        argv += ["--server", str(host), "--port", str(port)]
    elif not any(a in ("-s", "--server") or a.startswith("--server=") for a in args):
        raise ValueError("swaks needs a server: pass server=(host, port) or --server")
    argv += ["--timeout", f"{max(1, int(timeout) - 2)}s", *args]
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else exc.output
        raise AssertionError(f"swaks did not finish within {timeout:.0f}s: {argv}\n{out or ''}") from None


@pytest.fixture(scope="session")
def swaks() -> Callable[..., subprocess.CompletedProcess]:
    """``swaks(*args, server=(host, port) | relay, timeout=30) -> CompletedProcess``."""
    binary = require_binary("swaks", "swaks (swaks)")

    def run(*args: str, server: Any = None, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return run_swaks(*args, server=server, timeout=timeout, binary=binary)

    return run
