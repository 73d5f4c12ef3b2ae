"""The daemon's log: where it goes, in which form, and from which level.

`[log] file` ("" = standard error, which systemd hands to the journal),
`[log] format` ("text": one line per event as `time LEVEL logger: message`;
"json": one JSON object per line for Loki or Elasticsearch) and
`[log] level`. The daemon and each worker process install the same handler;
they append to one file (O_APPEND: each line lands whole). `configure` is
called again on SIGHUP: the file is opened anew (after logrotate moved it)
and a changed format or level applies at once.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys

from daemon.config import LogSettings
from daemon.errors import ConfigError

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries that say too much at INFO: aiosmtpd every command, aioimaplib
# every untagged line, APScheduler every job run.
CHATTY = ("mail.log", "aioimaplib", "apscheduler")
# What every LogRecord has; anything else on a record came in `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}

_installed: logging.Handler | None = None     # the handler `configure` put on the root logger


def configure(settings: LogSettings) -> None:
    """Install the handler `settings` describe in place of the one before.

    Raises ConfigError (one line naming `[log] file`) when the file cannot be
    opened; the handler before then stays in place.
    """
    global _installed
    handler = _handler(settings)
    root = logging.getLogger()
    root.addHandler(handler)            # the new one first: other threads log on meanwhile
    if _installed is not None:
        root.removeHandler(_installed)
        _installed.close()
    _installed = handler
    root.setLevel(os.environ.get("ORDERMAIL_LOG_LEVEL", settings.level).upper())
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)


def _handler(settings: LogSettings) -> logging.Handler:
    if settings.file:
        try:
            handler: logging.Handler = logging.FileHandler(settings.file, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"[log] file {settings.file!r} cannot be opened: {exc.strerror}") from None
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else logging.Formatter(TEXT_FORMAT))
    return handler


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message,
    the extras the code passed (`log.info(..., extra={"message_id": 7})`), and
    the exception's traceback as one string where there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update((key, value) for key, value in vars(record).items()
                     if key not in _STANDARD and key not in entry)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)
