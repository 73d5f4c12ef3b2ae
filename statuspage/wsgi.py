"""`statuspage.wsgi:app` for any WSGI server (gunicorn -w 4 statuspage.wsgi:app).

Configured by ORDERMAIL_CONFIG, as the command line is.
"""
from __future__ import annotations

import os

from daemon.config import load_settings
from daemon.store.database import open_store
from statuspage.app import make_app

_settings = load_settings(os.environ["ORDERMAIL_CONFIG"])
app = make_app(_settings, open_store(_settings.database.url))
