"""Shared fixtures: a store on each backend, settings bound to it, the CLI.

Every storage test runs twice, on SQLite and on PostgreSQL. PostgreSQL is
found at ORDERMAIL_TEST_PG (default: the local server, trust auth, database
`test`); each test gets a schema of its own, dropped afterwards. Where no
PostgreSQL answers the PostgreSQL half is skipped with a hint — except in CI
(CI=true) or with ORDERMAIL_REQUIRE_PG=1, where that is a failure.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import psycopg2
import pytest

from daemon.config import settings_from_dict
from daemon.store.database import open_store

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("ORDERMAIL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
PG_REQUIRED = os.environ.get("CI") == "true" or os.environ.get("ORDERMAIL_REQUIRE_PG") == "1"


def _postgres_or_skip() -> None:
    try:
        psycopg2.connect(PG_URL.split("?")[0], connect_timeout=3).close()
    except psycopg2.Error as exc:
        message = (f"PostgreSQL not reachable at {PG_URL} ({str(exc).strip()}); "
                   "start it or set ORDERMAIL_TEST_PG=postgresql://user@host:port/db to enable these tests")
        if PG_REQUIRED:
            pytest.fail(message)
        pytest.skip(message)


def _pg_schema_url(schema: str) -> str:
    options = quote(f"-c search_path={schema}")
    return f"{PG_URL}{'&' if '?' in PG_URL else '?'}options={options}"


def _run_pg(sql: str) -> None:
    conn = psycopg2.connect(PG_URL.split("?")[0])
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ordermail.db"
        return
    _postgres_or_skip()
    schema = f"t_{secrets.token_hex(6)}"
    _run_pg(f"CREATE SCHEMA {schema}")
    try:
        yield _pg_schema_url(schema)
    finally:
        _run_pg(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def settings(database_url, tmp_path):
    return settings_from_dict({
        "shop": {"name": "Teeladen", "address": "orders@shop.example",
                 "base_url": "https://shop.example/status", "locale": "de"},
        "owner": {"addresses": ["owner@shop.example"], "secret": "s3cret-command-key-0123"},
        "database": {"url": database_url},
        "outbound": {"maildir": str(tmp_path / "outbox")},
    })


@pytest.fixture
def store(settings):
    opened = open_store(settings.database.url)
    yield opened
    opened.close()


def sample_order(number: str | None = "1042", **changes) -> dict:
    """The contract's example order; keyword arguments replace its fields."""
    order = {"number": number,
             "customer": {"name": "Erika Mustermann", "email": "erika@example.org"},
             "items": [{"sku": "TK-1", "name": "Teekanne", "quantity": 1, "unit_price": "24.90"}],
             "total": "24.90", "currency": "EUR", "payment_method": "bank_transfer", "locale": "de"}
    if number is None:
        del order["number"]
    order.update(changes)
    return order


@pytest.fixture
def config_file(settings, tmp_path):
    """The same settings written as TOML, for the real `ordermail` command."""
    path = tmp_path / "ordermail.toml"
    path.write_text(
        "[shop]\nname = \"Teeladen\"\naddress = \"orders@shop.example\"\n"
        "base_url = \"https://shop.example/status\"\nlocale = \"de\"\n"
        "[owner]\naddresses = [\"owner@shop.example\"]\nsecret = \"s3cret-command-key-0123\"\n"
        f"[database]\nurl = {json.dumps(settings.database.url)}\n"
        f"[outbound]\nmaildir = {json.dumps(settings.outbound.maildir)}\n", encoding="utf-8")
    return path


@pytest.fixture
def ordermail(config_file):
    """Run the installed `ordermail` command as a user would; returns the result."""
    def run(*args, stdin: str | bytes | None = None, config: Path | None = config_file):
        argv = [sys.executable, "-m", "daemon.cli.main", *args]
        if config is not None:
            argv += ["--config", str(config)]
        env = {k: v for k, v in os.environ.items() if k != "ORDERMAIL_CONFIG"}
        data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
        result = subprocess.run(argv, input=data, capture_output=True, cwd=ROOT, env=env, timeout=60)
        result.stdout = result.stdout.decode("utf-8", "replace")
        result.stderr = result.stderr.decode("utf-8", "replace")
        return result
    return run


# ---- property-based tests (tests/fuzzing.py: profiles and counts) ----------------

import fuzzing  # noqa: E402  (loads the hypothesis profile named by HYPOTHESIS_PROFILE)


def pytest_collection_modifyitems(items):
    fuzzing.count_examples(items)


def pytest_runtest_call(item):
    fuzzing.running(item.nodeid)


def pytest_terminal_summary(terminalreporter):
    fuzzing.report(terminalreporter)
