"""`ordermail serve`: the daemon's lifecycle.

Start in order — store, worker processes (inbound handling and outbox, see
daemon/workers.py), spool, IMAP door, SMTP/LMTP listeners, web server,
scheduler — tell systemd READY (daemon/service.py), run until SIGTERM or
SIGINT, then stop in reverse: refuse new mail with 421, let messages in DATA
commit, let the worker processes finish what they hold, close the store,
exit 0. A second signal exits at once. SIGHUP reloads (daemon/reload.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from daemon import config
from daemon.orders import numbers as order_numbers
from daemon.config import Settings
from daemon.intake.health import DoorProbes
from daemon.intake.imap import ImapDoor
from daemon.intake.smtp import Listeners
from daemon.intake.spool import Spool
from daemon.jobs import Scheduler
from daemon.outbound.notify import check_templates
from daemon.process import freeze_startup_objects, prepare_process
from daemon.reload import Reloader
from daemon.service import Notifier, queue_status
from daemon.store.database import open_store, redact
from daemon.workers import WorkerPool

log = logging.getLogger("ordermail")
WORKERS_READY_SECONDS = 60


def serve(settings: Settings, config_path: Path) -> int:
    prepare_process(settings.log)
    return asyncio.run(_run(settings, config_path))


async def _run(settings: Settings, config_path: Path) -> int:
    notifier = Notifier()
    notifier.status("starting: opening the database")
    store = open_store(settings.database.url)
    log.info("store open: %s (%s)", redact(settings.database.url), store.backend)
    for warning in startup_warnings(settings, store):
        log.warning("%s", warning)
    workers = WorkerPool(settings, store)
    scheduler = Scheduler(settings, store)
    for problem in check_templates(settings):
        log.warning("mail template %s; the built-in one is used instead", problem)
    spool = Spool(store, on_commit=workers.wake)
    listeners = Listeners(settings, spool, store)
    imap = _ImapTask(settings, spool)
    web = _web_server(settings, store, DoorProbes(spool, asyncio.get_running_loop(), store))
    stop = asyncio.Event()
    _install_signals(stop, Reloader(config_path, settings, workers, web), notifier, store)
    try:
        workers.start()
        watch = asyncio.create_task(_watch(workers), name="watch-workers")
        imap.start()
        await listeners.start()
        if web is not None:
            web.start()
        scheduler.start()
        await _workers_ready(workers)
        freeze_startup_objects()
        log.info("ordermail ready; command address %s", settings.command_address_text())
        notifier.ready(await asyncio.to_thread(queue_status, store))
        notifier.start_watchdog()
        notifier.start_reporting(store)
        await stop.wait()
        notifier.stopping()
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
    notifier.close()
    return 0


async def _workers_ready(workers: WorkerPool) -> None:
    """READY means mail is handled too, not only taken: wait for the worker processes (bounded)."""
    late = await asyncio.to_thread(workers.wait_until_ready, WORKERS_READY_SECONDS)
    if late:
        log.warning("%d worker process(es) not ready after %ss; mail waits for them", late, WORKERS_READY_SECONDS)


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


def _web_server(settings: Settings, store, doors: DoorProbes):
    """The status pages and dashboard, when `[web] listen` is set (binds its port at once);
    its /healthz asks the doors too."""
    if not settings.web.listen:
        return None
    from statuspage.server import WebServer
    return WebServer(settings, store, doors=doors)


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


def _install_signals(stop: asyncio.Event, reloader: Reloader, notifier: Notifier, store) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(signum):
        if stop.is_set():
            log.warning("second %s: exiting at once", signal.Signals(signum).name)
            os._exit(1)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    reloads: set[asyncio.Task] = set()      # held until done: the loop keeps only weak references

    def on_reload():
        task = loop.create_task(_reload(reloader, notifier, store))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_reload)


async def _reload(reloader: Reloader, notifier: Notifier, store) -> None:
    notifier.reloading()
    try:
        await asyncio.to_thread(reloader.reload)
    except Exception:           # a reload must never take the daemon down
        log.exception("reload failed")
    notifier.reloaded(await asyncio.to_thread(queue_status, store))
