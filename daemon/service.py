"""What a service manager sees of `ordermail serve`: systemd's notify protocol.

Under `Type=notify` systemd hands the daemon a datagram socket in
`NOTIFY_SOCKET` (a path, or an abstract name written with a leading '@'),
and the daemon tells it, one datagram each:

- `READY=1` once the listeners are bound and the worker processes are up
  (systemctl start returns then, and units ordered after ordermail start);
- `STATUS=…` every few seconds: the queue depths, shown by systemctl status;
- `RELOADING=1` … `READY=1` around a SIGHUP's reload;
- `STOPPING=1` when a SIGTERM's drain begins;
- `WATCHDOG=1` every half of `WatchdogSec=` (`WATCHDOG_USEC`), from a task
  on the event loop: a loop that stands still sends nothing, and systemd
  kills and restarts the daemon. SIGABRT, systemd's watchdog signal, makes
  faulthandler write every thread's stack to standard error first.

The protocol is systemd's stable interface (sd_notify(3) describes it and
invites reimplementing it), so it is the few lines below rather than
libsystemd through systemd-python (a C build against libsystemd's headers)
or the `sdnotify` package (unchanged since 2017; it drops every error).
Without NOTIFY_SOCKET all of this does nothing.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

log = logging.getLogger("ordermail.service")
STATUS_SECONDS = 15
_ENVIRONMENT = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """Datagrams to systemd's notify socket; a no-op without one."""

    def __init__(self, environ=os.environ):
        address = environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_seconds = _watchdog_seconds(environ)
        for name in _ENVIRONMENT:      # not for the worker processes, nor anything they start
            environ.pop(name, None)
        self._socket: socket.socket | None = None
        self._failed = False
        self._ready = False
        self._watchdog: asyncio.Task | None = None      # held: the loop keeps only weak references
        self._reporter: asyncio.Task | None = None

    def send(self, *fields: str) -> None:
        """One datagram of `NAME=value` lines; a failure is logged once, never raised."""
        if not self.address:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.settimeout(2)      # a full queue never holds the event loop for long
            self._socket.sendto("\n".join(fields).encode("utf-8"), self.address)
        except OSError as exc:
            if not self._failed:
                log.warning("cannot notify the service manager at %s: %s", self.address.lstrip("\0"), exc)
            self._failed = True

    def ready(self, status: str) -> None:
        self._ready = True
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def reloading(self) -> None:
        """A reload begins; said only once READY was (a SIGHUP while starting is just done)."""
        if self._ready:     # MONOTONIC_USEC: systemd 253's Type=notify-reload wants to know when
            self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}",
                      "STATUS=reloading the configuration")

    def reloaded(self, status: str) -> None:
        if self._ready:
            self.ready(status)

    def stopping(self) -> None:
        """The drain begins: no more queue reports; the watchdog pings on to the loop's end."""
        if self._reporter is not None:
            self._reporter.cancel()
        self.send("STOPPING=1", "STATUS=stopping: finishing the mail in hand")

    def start_watchdog(self) -> None:
        self._watchdog = asyncio.get_running_loop().create_task(keep_watchdog_fed(self), name="watchdog")

    def start_reporting(self, store) -> None:
        self._reporter = asyncio.get_running_loop().create_task(report_queues(self, store), name="status")

    def close(self) -> None:
        for task in (self._watchdog, self._reporter):
            if task is not None:
                task.cancel()
        if self._socket is not None:
            self._socket.close()


def _watchdog_seconds(environ) -> float | None:
    """WatchdogSec= in seconds when it is meant for this process, else None."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = environ.get("WATCHDOG_PID", "")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 1_000_000


async def keep_watchdog_fed(notifier: Notifier) -> None:
    """WATCHDOG=1 every half of WatchdogSec=, for as long as the event loop turns.

    Nothing else is checked on purpose: the loop runs every door, the spool's
    answers and this task, so its turning is what "alive" means here. A loop
    that stands still (a blocking call, a deadlock) stops the pings.
    """
    if notifier.watchdog_seconds is None:
        return
    while True:
        notifier.send("WATCHDOG=1")
        await asyncio.sleep(notifier.watchdog_seconds / 2)


async def report_queues(notifier: Notifier, store) -> None:
    """STATUS= with the queue depths, every STATUS_SECONDS (read in a thread, off the loop)."""
    if not notifier.address:
        return
    while True:
        await asyncio.sleep(STATUS_SECONDS)
        notifier.status(await asyncio.to_thread(queue_status, store))


def queue_status(store) -> str:
    """"inbound: 3 waiting, 0 quarantined; outbox: 1 to send, 0 failed" (what /healthz reports)."""
    from statuspage.metrics import DATABASE_ERRORS, health
    try:
        depths = health(store)
    except DATABASE_ERRORS:
        return "running; the database does not answer"
    inbound, outbox = depths["inbound"], depths["outbox"]
    return (f"inbound: {inbound['new']} waiting, {inbound['quarantined']} quarantined; "
            f"outbox: {outbox['pending']} to send, {outbox['failed']} failed")
