"""`ordermail serve`: the daemon's lifecycle.

Start in order — store, worker processes (inbound handling and outbox, see
daemon/workers.py), spool, IMAP door, SMTP/LMTP listeners, web server,
scheduler — run until SIGTERM or SIGINT, then stop in reverse: refuse new
mail with 421, let messages in DATA commit, let the worker processes finish
what they hold, close the store, exit 0. A second signal exits at once.
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import signal

from daemon import config, order_numbers
from daemon.config import Settings
from daemon.intake.imap import ImapDoor
from daemon.intake.smtp import Listeners
from daemon.intake.spool import Spool
from daemon.jobs import Scheduler
from daemon.notify import check_templates
from daemon.store import open_store, redact
from daemon.workers import WorkerPool

log = logging.getLogger("ordermail")
M_MMAP_THRESHOLD = -3   # glibc's mallopt parameter


def serve(settings: Settings) -> int:
    prepare_process()
    return asyncio.run(_run(settings))


def prepare_process() -> None:
    """Logging and allocator settings, for the daemon and its worker process."""
    _return_big_buffers_to_the_system()
    logging.basicConfig(level=os.environ.get("ORDERMAIL_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)   # aiosmtpd logs every command at INFO
    logging.getLogger("aioimaplib").setLevel(logging.WARNING)  # and aioimaplib every untagged line
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # and APScheduler every job run


def freeze_startup_objects() -> None:
    """Leave what startup made (modules, templates, settings) out of garbage collection.

    A full collection walks every object the process holds: in the daemon
    that took 13–28 ms, and the event loop, with every sender waiting on it,
    stood still meanwhile (in a worker, its write transaction stayed open,
    and the next commit of received mail waited). Objects alive once the
    process is ready live as long as it does; frozen, they are not walked,
    and a full collection takes 2–4 ms.
    """
    gc.collect()
    gc.freeze()


def _return_big_buffers_to_the_system() -> None:
    """Keep glibc from raising its mmap threshold after the first big mail.

    By default glibc serves a buffer freed once from the heap next time, and
    the heap is not given back: after one 25 MB mail the daemon would keep
    every later mail's copies resident. A fixed threshold keeps big buffers
    in their own mappings, returned to the system when freed.
    """
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 256 * 1024)
    except (OSError, AttributeError):   # not glibc: nothing to tune
        pass


async def _run(settings: Settings) -> int:
    store = open_store(settings.database.url)
    log.info("store open: %s (%s)", redact(settings.database.url), store.backend)
    for warning in startup_warnings(settings, store):
        log.warning("%s", warning)
    workers = WorkerPool(settings, store)
    scheduler = Scheduler(settings, store)
    for problem in check_templates(settings):
        log.warning("mail template %s; the built-in one is used instead", problem)
    spool = Spool(store, on_commit=workers.wake)
    listeners = Listeners(settings, spool)
    imap = _ImapTask(settings, spool)
    web = _web_server(settings, store)
    stop = asyncio.Event()
    _install_signals(stop)
    try:
        workers.start()
        watch = asyncio.create_task(_watch(workers), name="watch-workers")
        imap.start()
        await listeners.start()
        if web is not None:
            web.start()
        scheduler.start()
        freeze_startup_objects()
        log.info("ordermail ready; command address %s", settings.command_address_text())
        await stop.wait()
        log.info("stopping: refusing new mail, finishing what was taken")
        workers.no_restarts()
        watch.cancel()
    finally:
        scheduler.stop()
        if web is not None:
            await asyncio.to_thread(web.stop)     # lets the requests in hand finish
        await listeners.stop()
        await imap.stop()
        spool.close()
        await asyncio.to_thread(workers.stop)
        store.close()
    log.info("stopped")
    return 0


def startup_warnings(settings: Settings, store) -> list[str]:
    """What the daemon's start and `ordermail check` tell the owner: set-ups that
    run but may not do what was meant, and order numbers that clash by case
    (the index on them is made unique here once none is left)."""
    found = config.warnings(settings)
    clashes = order_numbers.settle_index(store.db)
    return found + ([order_numbers.clash_warning(clashes)] if clashes else [])


async def _watch(workers: WorkerPool) -> None:
    """Start a worker process again should it die."""
    while True:
        await asyncio.sleep(2)
        await asyncio.to_thread(workers.check)    # may read the store: not on the event loop


def _web_server(settings: Settings, store):
    """The status pages and dashboard, when `[web] listen` is set (binds its port at once)."""
    if not settings.web.listen:
        return None
    from statuspage.server import WebServer
    return WebServer(settings, store)


class _ImapTask:
    """The IMAP door, when `[inbound.imap] host` is set, with its own stop event."""

    def __init__(self, settings: Settings, spool):
        self.settings, self.spool = settings, spool
        self.stopping, self.task = asyncio.Event(), None

    def start(self) -> None:
        if self.settings.inbound.imap.host:
            self.task = asyncio.create_task(ImapDoor(self.settings, self.spool).run(self.stopping), name="imap")

    async def stop(self) -> None:
        if self.task is None:
            return
        self.stopping.set()                 # finish the message in hand, LOGOUT
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.task, 30)


def _install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(signum):
        if stop.is_set():
            log.warning("second %s: exiting at once", signal.Signals(signum).name)
            os._exit(1)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
