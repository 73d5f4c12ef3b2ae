"""`ordermail serve` as a real process on free loopback ports, for end-to-end tests."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wait_until(condition, seconds: float = 15.0):
    """The condition's first true result, polled every 50 ms; AssertionError after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"condition not met in {seconds}s")


@contextlib.contextmanager
def gunicorn(app: str, port: int, log: Path, env: dict, *, pythonpath: Path | None = None):
    """gunicorn with two workers serving `app` on 127.0.0.1:`port`; yields the process,
    stops it with SIGTERM (killed after 15 s)."""
    command = [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}"]
    command += ["--pythonpath", str(pythonpath)] if pythonpath else []
    with log.open("wb") as out:
        process = subprocess.Popen([*command, app], cwd=ROOT, env={**os.environ, **env},
                                   stdout=out, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` different free ports: all held open until each is chosen, or
    two calls one after the other may get the same port back."""
    with contextlib.ExitStack() as held:
        socks = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def wait_for_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {seconds}s")


def child_pids(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue                      # ended while we looked
        if fields and int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return b"X"


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


class Daemon:
    """Start, stop and kill `ordermail serve` with its own config file."""

    def __init__(self, tmp_path: Path, database_url: str, extra: str = "", owner_extra: str = "",
                 max_message_bytes: int = 1048576, inbound_extra: str = "",
                 messages_per_sender_per_hour: int = 1_000_000, outbound_extra: str = "",
                 web: bool = False, web_listen: str = "", shop_extra: str = ""):
        """`messages_per_sender_per_hour`: tests and benchmarks send hundreds of
        mails from one address; the limit's own tests set it low. `*_extra`:
        more lines of that section; `extra`: whole sections after [web].
        `web`: serve the web app too, on `web_port` (or give `web_listen`)."""
        self.smtp_port, self.lmtp_port, self.web_port = free_ports(3)
        if web and not web_listen:
            web_listen = f"127.0.0.1:{self.web_port}"
        self.web = web
        self.config = tmp_path / "daemon.toml"
        self.log = tmp_path / "daemon.log"
        self.maildir = tmp_path / "outbox"
        self.config.write_text(
            "[shop]\nname = \"Teeladen\"\naddress = \"orders@shop.example\"\n"
            "base_url = \"https://shop.example/status\"\nlocale = \"de\"\n" + shop_extra +
            "[owner]\naddresses = [\"owner@shop.example\"]\nsecret = \"s3cret-command-key-0123\"\n"
            + owner_extra +
            f"[database]\nurl = {json.dumps(database_url)}\n"
            f"[inbound]\nsmtp_listen = \"127.0.0.1:{self.smtp_port}\"\n"
            f"lmtp_listen = \"127.0.0.1:{self.lmtp_port}\"\nmax_message_bytes = {max_message_bytes}\n"
            f"messages_per_sender_per_hour = {messages_per_sender_per_hour}\n"
            + inbound_extra +
            f"[outbound]\nmaildir = {json.dumps(str(self.maildir))}\n" + outbound_extra +
            f"[web]\nlisten = {json.dumps(web_listen)}\n" + extra, encoding="utf-8")
        self.process: subprocess.Popen | None = None

    def start(self, *, env: dict | None = None, prelude: str = "", wait: bool = True) -> "Daemon":
        """`env`: more environment (NOTIFY_SOCKET, …). `prelude`: Python run in the
        daemon's process before `ordermail serve` begins — a test's own hook, so
        that none lives in the product. `wait`: until the SMTP and LMTP ports answer."""
        env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        env.pop("ORDERMAIL_CONFIG", None)
        command = [sys.executable, "-m", "daemon.cli.main"]
        if prelude:
            command = [sys.executable, "-c", f"{prelude}\nimport sys\nfrom daemon.cli.main import main\nsys.exit(main())"]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([*command, "serve", "--config", str(self.config)],
                                            cwd=ROOT, env=env, stdout=log, stderr=log)
        if wait:
            wait_for_port(self.smtp_port)
            wait_for_port(self.lmtp_port)
            if self.web:
                wait_for_port(self.web_port)
        return self

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def crash(self) -> list[int]:
        """SIGKILL the daemon and its worker processes at once — a machine that
        dies, or a cgroup killed whole — and reap them; returns their pids."""
        if self.process is None or self.process.poll() is not None:
            return []
        pids = [self.process.pid, *self.worker_pids()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        for pid in pids[1:]:        # the children are reaped by init once their parent is gone
            wait_until(lambda: not Path(f"/proc/{pid}").exists() or b"Z" in _state(pid), 30)
        return pids

    def worker_pids(self) -> list[int]:
        """The daemon's worker process (not multiprocessing's resource tracker), from /proc."""
        if self.process is None:
            return []
        return [pid for pid in child_pids(self.process.pid) if b"spawn_main" in _cmdline(pid)]

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")
