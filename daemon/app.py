"""`ordermail serve`: the daemon's lifecycle.

Start in order — store, then (in later releases) the inbound worker, the
SMTP/LMTP/IMAP listeners, the web server and the scheduler — run until
SIGTERM or SIGINT, then stop in reverse and exit 0. A second signal exits at
once.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal

from daemon.config import Settings
from daemon.store import open_store, redact

log = logging.getLogger("ordermail")


def serve(settings: Settings) -> int:
    logging.basicConfig(level=os.environ.get("ORDERMAIL_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_run(settings))


async def _run(settings: Settings) -> int:
    store = open_store(settings.database.url)
    log.info("store open: %s (%s)", redact(settings.database.url), store.backend)
    stop = asyncio.Event()
    _install_signals(stop)
    log.info("ordermail ready; command address %s", settings.command_address)
    try:
        await stop.wait()
        log.info("stopping")
    finally:
        store.close()
    log.info("stopped")
    return 0


def _install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(signum):
        if stop.is_set():
            log.warning("second %s: exiting at once", signal.Signals(signum).name)
            os._exit(1)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
