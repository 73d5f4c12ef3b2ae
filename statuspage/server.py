"""The in-process web server of `ordermail serve` (waitress, in a thread).

16 threads: with 4, waitress fell from ~3,200 to ~800 req/s at 16
connections (bench/page.py); requests mostly wait on the database.
"""
from __future__ import annotations

import logging
import threading

from waitress import wasyncore
from waitress.server import create_server

from statuspage.app import make_app, reload_templates

log = logging.getLogger("ordermail.web")


class WebServer:
    def __init__(self, settings, store, *, threads: int = 16, doors=None):
        host, _, port = settings.web.listen.rpartition(":")
        self._app = make_app(settings, store, doors)
        self._server = create_server(self._app, host=host.strip("[]"), port=int(port),
                                     threads=threads, ident="ordermail")
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="web", daemon=True)
        self.listen = settings.web.listen

    def start(self) -> None:
        self._thread.start()
        log.info("web listening on %s", self.listen)

    def reload_templates(self) -> None:
        reload_templates(self._app)

    def _run(self) -> None:
        try:
            self._server.run()
        except OSError:
            # stop() closes the sockets under the running select(): expected then
            if not self._stopping:
                raise

    def stop(self) -> None:
        """Let the requests in hand finish (up to 5 s), then close the listener and every connection."""
        self._stopping = True
        self._server.task_dispatcher.shutdown(cancel_pending=False, timeout=5)
        wasyncore.close_all(self._server._map)
        self._thread.join(10)
