"""SIGHUP: read the configuration again and apply what can change while running.

Applied at once: the log (`[log] level`, `format`, `file` — the file is
opened anew in any case, so logrotate's HUP after moving it starts a new
one), the mail templates and the catalogs of words (in the daemon and every
worker process: `notify.reload_templates`) and the page templates, read
again from the folders named at start. Every other key that changed is reported in one
line each — "[inbound] smtp_listen changed; restart ordermail to apply" —
because the doors, the database, the worker processes and the web server
were built from the configuration as it was at start; it is reported again
at each reload until a restart. A file that no longer loads is reported in
one line and nothing of it applies; the log and the templates are still
read anew.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

from daemon import logs
from daemon.outbound import notify
from daemon.config import Settings, load_settings
from daemon.errors import ConfigError

log = logging.getLogger("ordermail")
LIVE_KEYS = frozenset({"[log] level", "[log] format", "[log] file"})


class Reloader:
    """What a SIGHUP does, given what the daemon built at start."""

    def __init__(self, config_path: Path, settings: Settings, workers, web):
        self.config_path, self.running = config_path, settings
        self.workers, self.web = workers, web
        self._lock = threading.Lock()

    def reload(self) -> None:
        """Called in a thread (reading templates takes a while); two HUPs in a row reload twice."""
        with self._lock:
            self._reload()

    def _reload(self) -> None:
        wanted = self._read_configuration()
        self._apply_log(wanted.log)
        self._read_templates()
        for key in changed_keys(self.running, wanted):
            if key not in LIVE_KEYS:
                log.warning("%s changed; restart ordermail to apply", key)
        log.info("reloaded: log opened anew, mail and page templates read again")

    def _read_configuration(self) -> Settings:
        try:
            return load_settings(self.config_path)
        except ConfigError as exc:
            log.error("configuration not reloaded: %s; the running one stays", exc)
            return self.running

    def _apply_log(self, wanted) -> None:
        try:
            logs.configure(wanted)
        except ConfigError as exc:      # the file cannot be opened: open the one before anew
            logs.configure(self.running.log)
            log.error("%s; logging on as before", exc)
            wanted = self.running.log
        self.running = dataclasses.replace(self.running, log=wanted)
        self.workers.reload(wanted)

    def _read_templates(self) -> None:
        notify.reload_templates()
        for problem in notify.check_templates(self.running):
            log.warning("mail template %s; the built-in one is used instead", problem)
        if self.web is not None:
            self.web.reload_templates()


def changed_keys(before: Settings, after: Settings) -> list[str]:
    """Each key whose value differs, as the configuration file names it: "[inbound.imap] host"."""
    return list(_changed(before, after, ""))


def _changed(before, after, section: str):
    for field in dataclasses.fields(before):
        old, new = getattr(before, field.name), getattr(after, field.name)
        if old == new:
            continue
        if dataclasses.is_dataclass(old):
            yield from _changed(old, new, _join(section, field.name))
        elif isinstance(old, dict):             # [payment.NAME] tables
            for name in sorted(old.keys() | new.keys()):
                yield from _changed_table(old.get(name), new.get(name), _join(section, field.name, name))
        else:
            yield f"[{section}] {field.name}" if section else field.name


def _changed_table(old, new, section: str):
    if old is None or new is None:
        yield f"[{section}]"                     # a table added or taken away
    elif old != new:
        yield from _changed(old, new, section)


def _join(*parts: str) -> str:
    return ".".join(part for part in parts if part)
