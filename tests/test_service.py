"""`ordermail serve` under a service manager: systemd's notify protocol, spoken to a
socket the test opens.

The daemon is the real process (tests/daemonproc.py); the test plays systemd:
it binds a unix datagram socket, hands its name in NOTIFY_SOCKET (a path, or
an abstract name written with '@'), and reads what arrives — READY=1,
STATUS=, RELOADING=1, STOPPING=1, WATCHDOG=1. The notify protocol does not
depend on the database, so these run on SQLite.
"""
from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import sample_order
from daemonproc import ROOT, Daemon, wait_until

# Run in the daemon's process before `ordermail serve` (never part of the product):
# SIGUSR2 blocks the event loop — the main thread, where Python runs signal handlers —
# for as many seconds as the file `block-seconds` beside the config says.
STUCK_LOOP = """
import signal, time, pathlib, sys
def stuck_event_loop(signum, frame):
    time.sleep(float(pathlib.Path(sys.argv[-1]).with_name("block-seconds").read_text()))
signal.signal(signal.SIGUSR2, stuck_event_loop)
"""


class FakeSystemd:
    """The service manager's end of NOTIFY_SOCKET: every datagram, with the time it came."""

    def __init__(self, address: str):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._closed = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            self.messages.append((time.monotonic(), fields))

    def received(self, name: str, value: str | None = None) -> list[tuple[float, dict]]:
        return [(t, m) for t, m in list(self.messages) if name in m and (value is None or m[name] == value)]

    def wait_for(self, name: str, value: str | None = None, seconds: float = 30, after: float = 0.0):
        """The first message carrying `name` (= `value`) that came after `after`."""
        def arrived():
            found = [(t, m) for t, m in self.received(name, value) if t > after]
            return found[0] if found else None
        return wait_until(arrived, seconds)

    def watchdog_pings(self, start: float, end: float) -> int:
        return sum(start <= t < end for t, _ in self.received("WATCHDOG", "1"))

    def close(self) -> None:
        self._closed = True
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def notify_address():
    """A path for NOTIFY_SOCKET: a unix socket's path must stay under 108 bytes,
    which pytest's tmp_path may not."""
    with tempfile.TemporaryDirectory(prefix="om-notify-", dir="/tmp") as folder:
        yield str(Path(folder) / "notify")


@contextlib.contextmanager
def notifying_daemon(tmp_path, address: str, env: dict | None = None, prelude: str = "", wait: bool = True,
                     **daemon_options):
    """The real daemon on SQLite, its NOTIFY_SOCKET (and `env`) given, and the test's end of that socket."""
    systemd = FakeSystemd(address)
    daemon = Daemon(tmp_path, f"sqlite:///{tmp_path}/ordermail.db", **daemon_options)
    try:
        daemon.start(env={"NOTIFY_SOCKET": address, **(env or {})}, prelude=prelude, wait=wait)
        yield systemd, daemon
    finally:
        try:
            daemon.stop()
        except subprocess.TimeoutExpired:       # its loop is held: nothing else ends it
            daemon.kill()
        systemd.close()


def test_ready_comes_once_the_listeners_are_bound_and_the_workers_are_up(tmp_path):
    with notifying_daemon(tmp_path, f"@ordermail-test-{time.monotonic_ns()}", wait=False) as (systemd, daemon):
        _, ready = systemd.wait_for("READY", "1")
        # At READY the doors answer at once and both worker processes are there.
        socket.create_connection(("127.0.0.1", daemon.smtp_port), timeout=2).close()
        socket.create_connection(("127.0.0.1", daemon.lmtp_port), timeout=2).close()
        assert len(daemon.worker_pids()) == 2
        assert "ordermail ready" in daemon.log_text()
        assert ready["STATUS"] == "inbound: 0 waiting, 0 quarantined; outbox: 0 to send, 0 failed"
        # Before it only "starting" was said.
        assert systemd.messages[0][1] == {"STATUS": "starting: opening the database"}
        # No WatchdogSec= given: no pings.
        time.sleep(1)
        assert not systemd.received("WATCHDOG")


def test_status_tells_the_queue_depths_and_stopping_comes_before_the_exit(tmp_path, notify_address):
    # A smarthost that refuses: the order's notification waits in the outbox.
    with notifying_daemon(tmp_path, notify_address, prelude="import daemon.service\ndaemon.service.STATUS_SECONDS = 0.5",
                          outbound_extra='mode = "smtp"\nsmtp_port = 9\n') as (systemd, daemon):
        systemd.wait_for("READY", "1")
        created = subprocess.run([sys.executable, "-m", "daemon.cli.main", "order", "create", "--json", "-",
                                  "--config", str(daemon.config)], input=json.dumps(sample_order()), text=True,
                                 capture_output=True, cwd=ROOT, timeout=60)
        assert created.returncode == 0, created.stderr
        systemd.wait_for("STATUS", "inbound: 0 waiting, 0 quarantined; outbox: 1 to send, 0 failed")
        signalled = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        _, stopping = systemd.wait_for("STOPPING", "1", after=signalled)
        assert daemon.process.wait(60) == 0
        assert stopping["STATUS"].startswith("stopping")
        assert "stopped" in daemon.log_text()


def test_watchdog_pings_while_the_event_loop_turns_and_stop_while_it_is_stuck(tmp_path, notify_address):
    # WatchdogSec=1s: a ping every 0.5 s.
    with notifying_daemon(tmp_path, notify_address, env={"WATCHDOG_USEC": "1000000"},
                          prelude=STUCK_LOOP) as (systemd, daemon):
        block = daemon.config.with_name("block-seconds")
        ready_at, _ = systemd.wait_for("READY", "1")
        time.sleep(2.6)
        assert systemd.watchdog_pings(ready_at, ready_at + 2.5) >= 4

        # The loop stands still for 2.5 s: no ping, though the process lives on.
        block.write_text("2.5")
        stuck_at = time.monotonic()
        daemon.process.send_signal(signal.SIGUSR2)
        time.sleep(2.0)
        assert systemd.watchdog_pings(stuck_at + 0.3, stuck_at + 2.0) == 0
        assert daemon.process.poll() is None
        # It turns again: so do the pings.
        systemd.wait_for("WATCHDOG", "1", seconds=5, after=stuck_at + 2.5)

        # Stuck for good: systemd's answer to the missed watchdog is SIGABRT, and the
        # journal gets the stack of the call that holds the loop.
        block.write_text("60")
        daemon.process.send_signal(signal.SIGUSR2)
        time.sleep(1.5)
        daemon.process.send_signal(signal.SIGABRT)
        assert daemon.process.wait(30) == -signal.SIGABRT
        log = daemon.log_text()
        assert "Fatal Python error: Aborted" in log
        assert "in stuck_event_loop" in log


def test_watchdog_meant_for_another_process_is_left_alone(tmp_path, notify_address):
    with notifying_daemon(tmp_path, notify_address,
                          env={"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "1"}) as (systemd, daemon):
        systemd.wait_for("READY", "1")
        time.sleep(1.5)
        assert not systemd.received("WATCHDOG")


def test_sighup_says_reloading_then_ready_again(tmp_path, notify_address):
    with notifying_daemon(tmp_path, notify_address) as (systemd, daemon):
        ready_at, _ = systemd.wait_for("READY", "1")
        daemon.process.send_signal(signal.SIGHUP)
        reloading_at, reloading = systemd.wait_for("RELOADING", "1", after=ready_at)
        assert int(reloading["MONOTONIC_USEC"]) > 0
        systemd.wait_for("READY", "1", after=reloading_at)
        assert "reloaded" in daemon.log_text()
        assert daemon.process.poll() is None
