"""The worker processes: inbound handling and outbox sending beside the doors.

Why a process of its own: handling mail is CPU-bound Python (parsing,
trimming, templating, MIME). In the daemon's process it would share one
interpreter lock with the SMTP/LMTP/IMAP doors and delay every
acknowledgement; in children it runs on the other cores, and the doors
only receive and commit. `[inbound] workers` children share the stored mail
(claims keep them apart); the first also sends the outbox and verifies
PayPal's IPN messages (daemon/payments/paypal_verifier.py).

The daemon writes a byte to the child's pipe whenever mail is committed (a
wake-up; the child also looks by itself every few seconds), and on SIGHUP a
reload: "R", the `[log]` settings as JSON, a newline (the child opens its
log anew and reads the mail templates again). The pipe's end
means the daemon is gone — stopped, or killed with SIGKILL — and the child
finishes the group in hand and exits, so no orphan keeps working. A child
that dies is started again; what it had claimed (received mail, outbox
rows) is handed out again at once.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import select
import signal
import threading
import time

from daemon.config import LogSettings, Settings
from daemon.errors import ConfigError, StoreUnavailable
from daemon.handling.inbound import InboundWorker, release_dead_claims
from daemon.outbound import outbox
from daemon.outbound.outbox import OutboxWorker
from daemon.payments.paypal_verifier import PaypalVerifier
from daemon.process import freeze_startup_objects, prepare_process   # as the daemon
from daemon.store.database import open_store

log = logging.getLogger("ordermail.workers")
RESTART_BACKOFF_SECONDS = (1, 2, 5, 10, 30)
STOP_SECONDS = 60
WORKER_NICENESS = 5


class WorkerPool:
    """The daemon's side of all worker processes."""

    def __init__(self, settings: Settings, store):
        self.workers = [WorkerProcess(settings, store, sends_outbox=n == 0)
                        for n in range(settings.inbound.workers)]

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def wake(self, *_ignored) -> None:
        for worker in self.workers:
            worker.wake()

    def wait_until_ready(self, seconds: float) -> int:
        """Wait for every child to say it is ready; returns how many did not in time."""
        deadline = time.monotonic() + seconds
        return sum(not worker.wait_until_ready(deadline - time.monotonic()) for worker in self.workers)

    def reload(self, log_settings: LogSettings) -> None:
        for worker in self.workers:
            worker.reload(log_settings)

    def check(self) -> None:
        for worker in self.workers:
            worker.check()

    def no_restarts(self) -> None:
        """The daemon is stopping: a child that ends now (systemd signals the
        whole group) is not started again."""
        for worker in self.workers:
            worker.stopping = True

    def stop(self) -> None:
        """All pipes closed first, so the children finish side by side."""
        for worker in self.workers:
            worker.close()
        for worker in self.workers:
            worker.join()


class WorkerProcess:
    """One worker process: start, wake, watch and stop it."""

    def __init__(self, settings: Settings, store, *, sends_outbox: bool):
        self.settings, self.store, self.sends_outbox = settings, store, sends_outbox
        self.process: multiprocessing.Process | None = None
        self._wake_fd: int | None = None
        self._pipe_lock = threading.Lock()
        self._restarts = 0
        self._restart_at: float | None = None
        self._reload_message: bytes | None = None     # a reload the pipe had no room for yet
        self._ready = None
        self.stopping = False

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")   # a fresh interpreter: no threads or sockets copied
        reader, writer = context.Pipe(duplex=False)
        if self._ready is not None:
            self._ready.close()
        self._ready, ready_writer = context.Pipe(duplex=False)
        self.process = context.Process(target=_child_main,
                                       args=(self.settings, reader, self.sends_outbox, ready_writer),
                                       name="ordermail-worker", daemon=False)
        self.process.start()
        reader.close()
        ready_writer.close()
        os.set_blocking(writer.fileno(), False)
        with self._pipe_lock:
            self._writer = writer                         # keeps the pipe open while we live
            self._wake_fd = writer.fileno()
        log.info("worker process %s started", self.process.pid)

    def wake(self, *_ignored) -> None:
        """Tell the child that mail was committed; a full pipe already says so."""
        with self._pipe_lock:           # the watcher may be closing the pipe meanwhile
            if self._wake_fd is None:
                return
            try:
                os.write(self._wake_fd, b"!")
            except OSError:             # full (it knows already) or the child is gone
                pass

    def wait_until_ready(self, seconds: float) -> bool:
        """Whether the child said it is ready within `seconds` (False if it died first)."""
        try:
            return self._ready.poll(max(seconds, 0)) and self._ready.recv_bytes() == b"ready"
        except (EOFError, OSError):
            return False

    def reload(self, log_settings: LogSettings) -> None:
        """Have the child open its log anew (with these settings) and read its templates again."""
        self.settings = dataclasses.replace(self.settings, log=log_settings)   # for a child started later
        self._reload_message = b"R" + json.dumps(dataclasses.asdict(log_settings)).encode() + b"\n"
        self._send_reload()

    def _send_reload(self) -> None:
        with self._pipe_lock:
            if self._reload_message is None or self._wake_fd is None:
                return
            try:        # at most PIPE_BUF bytes: written whole or not at all
                os.write(self._wake_fd, self._reload_message)
            except BlockingIOError:     # the pipe is full: check() tries again
                return
            except OSError:             # the child is gone; the next one starts with the new settings
                pass
            self._reload_message = None

    def check(self) -> None:
        """Start the child again if it died, after a growing pause (called every few seconds)."""
        self._send_reload()
        if self.stopping or self.process is None or self.process.is_alive():
            return
        if self._restart_at is None:
            delay = RESTART_BACKOFF_SECONDS[min(self._restarts, len(RESTART_BACKOFF_SECONDS) - 1)]
            log.error("worker process %s ended with %s; starting it again in %ss",
                      self.process.pid, self.process.exitcode, delay)
            self._close_pipe()
            self._restarts += 1
            self._restart_at = time.monotonic() + delay
            self._take_back_claims()
        if time.monotonic() >= self._restart_at:
            self._restart_at = None
            self.start()

    def _take_back_claims(self) -> None:
        try:
            released = release_dead_claims(self.store)
            resent = outbox.release_dead_claims(self.store)
        except Exception as exc:   # the store is down: the new child's start tries again
            log.warning("could not take back the dead worker's claims: %s", exc)
            return
        if released:
            log.warning("took back %d message(s) the dead worker had claimed", released)
        if resent:
            log.warning("took back %d outbox mail(s) the dead worker was sending; they are sent again", resent)

    def close(self) -> None:
        """Close the pipe: the child finishes what it holds and exits."""
        self.stopping = True
        if self.process is not None:
            self._close_pipe()

    def _close_pipe(self) -> None:
        with self._pipe_lock:
            self._wake_fd = None      # never write to a number the system may hand out again
            self._writer.close()

    def join(self) -> None:
        """Wait for the child to exit, then insist."""
        if self.process is None:
            return
        self.process.join(STOP_SECONDS)
        if self.process.is_alive():
            log.warning("worker process %s did not stop in %ss; terminating it", self.process.pid, STOP_SECONDS)
            self.process.terminate()
            self.process.join(10)


def _child_main(settings: Settings, reader, sends_outbox: bool, ready) -> None:
    """A worker process: the inbound worker (and the outbox) until the pipe ends or SIGTERM."""
    prepare_process(settings.log)
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C reaches the daemon, which closes the pipe
    signal.signal(signal.SIGHUP, signal.SIG_IGN)      # a reload comes through the pipe (a HUP to the group too)
    # When cores are short, taking mail in comes first: a sender waits for
    # its 250, while handling a stored mail a moment later loses nothing.
    os.nice(WORKER_NICENESS)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        store = open_store(settings.database.url, migrate=False, replayable=True)
    except StoreUnavailable as exc:     # e.g. PostgreSQL still recovering: the daemon starts us again
        log.warning("worker process: %s; it ends and is started again", exc)
        raise SystemExit(1) from None
    inbound = InboundWorker(store, settings)
    outbox = OutboxWorker(store, settings) if sends_outbox else None
    # PayPal's answers are awaited beside the outbox: both wait on the network, not the CPU.
    verifier = PaypalVerifier(store, settings) if sends_outbox and settings.paypal.receiver_email else None
    freeze_startup_objects()
    inbound.start()
    for background in (outbox, verifier):
        if background is not None:
            background.start()
    try:
        try:
            ready.send_bytes(b"ready")
        except BrokenPipeError:     # the daemon died while we started: give back what was claimed, and end
            return
        finally:
            ready.close()
        _wait_for_wake_ups(reader.fileno(), inbound, stopping)
    finally:
        for background in (verifier, outbox):
            if background is not None:
                background.stop()
        inbound.stop()
        store.close()


def _wait_for_wake_ups(fd: int, inbound: InboundWorker, stopping: threading.Event) -> None:
    unfinished = b""
    while not stopping.is_set():
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            continue
        try:
            data = os.read(fd, 4096)
        except InterruptedError:
            continue
        if not data:          # the daemon is gone
            return
        unfinished = _obey(unfinished + data, inbound)


def _obey(data: bytes, inbound: InboundWorker) -> bytes:
    """Wake-ups ("!") and reloads ("R{json}\\n") from the pipe; returns a reload cut off by the read."""
    while data:
        wake_ups, reload, rest = data.partition(b"R")
        if wake_ups:
            inbound.wake()
        if not reload:
            return b""
        message, newline, data = rest.partition(b"\n")
        if not newline:
            return b"R" + message       # the rest comes with the next read
        _reload(LogSettings(**json.loads(message)))
    return b""


def _reload(log_settings: LogSettings) -> None:
    from daemon import logs
    from daemon.outbound import notify
    try:
        logs.configure(log_settings)
    except ConfigError as exc:
        log.error("%s; logging on as before", exc)
    notify.reload_templates()
    log.info("worker process %s: log opened anew, mail templates read again", os.getpid())
