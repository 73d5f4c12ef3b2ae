"""How fast is a customer's order page, next to bottle's hello world on the same server?

    .venv/bin/python bench/page.py [--duration 10] [--connections 16] [--threads 2]
                                   [--servers waitress,gunicorn]

Builds a throw-away SQLite store (in a temporary folder) with one order whose
log has 50 events — messages with formatting, an inline image and a file,
paid, shipped with tracking, and internal notes the page must leave out —
then, for each server, loads with wrk (Debian package `wrk`), one after the
other on the same running server:

- `/bench/hello`: a bottle route returning "Hello World!", added only to this
  benchmark's own copy of the app (never to production code);
- `/o/<token>`: the order page, a first visit (200);
- `/o/<token>` with `If-None-Match: <its ETag>`: a repeat visit (304).

The servers: the daemon's in-process waitress (statuspage.server.WebServer in
a thread of this process, 4 threads as `ordermail serve` has them;
--waitress-threads to compare) and `gunicorn -w 2` (sync workers). Load goes to
127.0.0.1 only, each run bounded by --duration. Goals: the page at ≥ 0.4× the
hello world's requests/s, p99 ≤ 10 ms, and p99 within 1.5× the hello world's p99
in the same run (the tail: no request stalls) under gunicorn. Prints a table and
one JSON line (`BENCH_JSON {...}`). Until the order page exists the page rows
show its status (404) — the bench picks the real page up as soon as it is there.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from daemon.orders import service as orders  # noqa: E402
from daemon.config import load_settings  # noqa: E402
from daemon.orders.service import Content, NewFile, Via  # noqa: E402
from daemon.store.models import Order
from daemon.store.database import open_store
from daemonproc import free_port, gunicorn  # noqa: E402

EVENTS = 50
GOAL_RATIO, GOAL_P99_MS, GOAL_TAIL = 0.4, 10.0, 1.5
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2274f9b0000000049454e44ae426082")


# ---- the app under test --------------------------------------------------------------------

def bench_app(settings, store):
    """The production app plus a hello-world route, for this benchmark only."""
    from statuspage.app import make_app
    app = make_app(settings, store)
    app.route("/bench/hello", "GET", lambda: "Hello World!")
    return app


def wsgi_app():
    """For gunicorn: `gunicorn --pythonpath bench 'page:wsgi_app()'` with ORDERMAIL_CONFIG."""
    settings = load_settings(os.environ["ORDERMAIL_CONFIG"])
    return bench_app(settings, open_store(settings.database.url))


# ---- the data ------------------------------------------------------------------------------

def write_config(folder: Path, port: int) -> Path:
    path = folder / "ordermail.toml"
    path.write_text(
        "[shop]\nname = \"Teeladen\"\naddress = \"orders@shop.example\"\n"
        f"base_url = \"http://127.0.0.1:{port}\"\nlocale = \"de\"\n"
        f"[database]\nurl = \"sqlite:///{folder}/bench.db\"\n"
        f"[outbound]\nmaildir = \"{folder}/outbox\"\n"
        f"[web]\nlisten = \"127.0.0.1:{port}\"\n", encoding="utf-8")
    return path


def build_order(settings, store) -> str:
    """One order with a log of EVENTS events; returns its status token."""
    quiet = Via(quiet=True)
    order = orders.create_order(store, settings, {
        "number": "4711", "customer": {"name": "Erika Mustermann", "email": "erika@example.org"},
        "items": [{"sku": f"TK-{i}", "name": f"Teekanne Nr. {i}", "quantity": 1 + i % 3, "unit_price": "24.90"}
                  for i in range(6)],
        "total": "298.80", "currency": "EUR", "payment_method": "bank_transfer", "locale": "de"}, quiet=True)
    orders.mark_paid(store, settings, order.number, via=quiet)
    orders.mark_shipped(store, settings, order.number, tracking="00340434161094042557", carrier="DHL", via=quiet)
    for i in range(EVENTS - 3):
        if i % 7 == 6:
            orders.add_note(store, settings, order.number, Content(text=f"Interne Notiz {i}: nicht zeigen"))
            continue
        files = ()
        if i == 0:
            files = (NewFile("foto.png", "image/png", PNG, content_id="foto@shop"),
                     NewFile("rechnung.pdf", "application/pdf", b"%PDF-1.4\n%bench\n"))
        html = (f"<p>Nachricht <strong>{i}</strong> zu Ihrer Bestellung: <em>vielen Dank</em>.</p>"
                "<ul><li>Tee</li><li>Kanne</li></ul>" + ('<p><img src="cid:foto@shop" alt="Foto"></p>' if i == 0 else ""))
        orders.add_message(store, settings, order.number,
                           Content(subject=f"Nachricht {i}", text=f"Nachricht {i}", html=html, files=files), via=quiet)
    return Order.get(Order.number == order.number).status_token


# ---- the servers -----------------------------------------------------------------------------

@contextlib.contextmanager
def waitress_server(settings, store, threads: int):
    from statuspage import server
    original, server.make_app = server.make_app, bench_app   # the daemon's own server, our app copy
    try:
        web = server.WebServer(settings, store, threads=threads)
    finally:
        server.make_app = original
    web.start()
    try:
        yield
    finally:
        web.stop()


def wait_for(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/bench/hello", timeout=2):
                return
        except (OSError, urllib.error.URLError):
            time.sleep(0.1)
    raise SystemExit(f"bench: no server answered on 127.0.0.1:{port} within {seconds} s")


# ---- measuring -------------------------------------------------------------------------------

def probe(url: str, headers=None) -> dict:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return {"status": response.status, "etag": response.headers.get("ETag"), "bytes": len(response.read())}
    except urllib.error.HTTPError as error:
        return {"status": error.code, "etag": error.headers.get("ETag"), "bytes": len(error.read())}


def wrk(url: str, args, headers=()) -> dict:
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s", "--latency",
               "--timeout", "5s", *[part for header in headers for part in ("-H", header)], url]
    output = subprocess.run(command, capture_output=True, text=True, timeout=args.duration + 60).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", output)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    if not rps or not p99:
        raise SystemExit(f"bench: cannot read wrk's output:\n{output}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return {"rps": float(rps.group(1)), "p99_ms": round(float(p99.group(1)) * scale, 3),
            "non_2xx_3xx": int(bad.group(1)) if bad else 0, "socket_errors": errors.group(1) if errors else ""}


def app_cost(settings, store, token: str, calls: int = 2000) -> dict:
    """CPU per request of the app alone (no server, no network), by process time:
    a figure the other load on the machine hardly moves."""
    from io import BytesIO
    from wsgiref.util import setup_testing_defaults
    app = bench_app(settings, store)
    etag = probe_app(app, f"/o/{token}")[1]
    costs = {}
    for route, path, headers in (("hello", "/bench/hello", {}), ("page", f"/o/{token}", {}),
                                 ("page 304", f"/o/{token}", {"HTTP_IF_NONE_MATCH": etag or ""})):
        environ = {}
        setup_testing_defaults(environ)
        environ.update(PATH_INFO=path, **headers)
        start = time.process_time()
        for _ in range(calls):
            environ["wsgi.input"] = BytesIO()
            b"".join(app(dict(environ), lambda status, headers, exc_info=None: None))
        costs[route] = round((time.process_time() - start) / calls * 1e6, 1)
    return costs


def probe_app(app, path: str) -> tuple[str, str | None]:
    from io import BytesIO
    from wsgiref.util import setup_testing_defaults
    environ, seen = {}, {}
    setup_testing_defaults(environ)
    environ.update(PATH_INFO=path, **{"wsgi.input": BytesIO()})
    b"".join(app(environ, lambda status, headers, exc_info=None: seen.update(status=status, headers=dict(headers))))
    return seen["status"], seen["headers"].get("ETag")


def measure(server: str, port: int, token: str, args) -> list[dict]:
    base = f"http://127.0.0.1:{port}"
    page = probe(f"{base}/o/{token}")
    rows = [{"server": server, "route": "hello", **probe(f"{base}/bench/hello"), **wrk(f"{base}/bench/hello", args)},
            {"server": server, "route": "page", **page, **wrk(f"{base}/o/{token}", args)}]
    if page["etag"]:
        header = f"If-None-Match: {page['etag']}"
        repeat = probe(f"{base}/o/{token}", {"If-None-Match": page["etag"]})
        rows.append({"server": server, "route": "page 304", **repeat, **wrk(f"{base}/o/{token}", args, [header])})
    hello, hello_p99 = rows[0]["rps"], rows[0]["p99_ms"]
    for row in rows:
        row["ratio"] = round(row["rps"] / hello, 3) if hello else 0.0
        row["p99_x_hello"] = round(row["p99_ms"] / hello_p99, 2) if hello_p99 else 0.0
    return rows


def report(rows: list[dict], page_status: int, args) -> dict:
    print(f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration}s, order page of {EVENTS} events "
          f"(page status {page_status}); load average {os.getloadavg()[0]:.2f}")
    print(f"{'server':11} {'route':9} {'status':>6} {'bytes':>7} {'req/s':>9} {'x hello':>8} {'p99 ms':>8} "
          f"{'x hello':>8}  notes")
    for r in rows:
        notes = ", ".join(filter(None, [f"{r['non_2xx_3xx']} non-2xx/3xx" if r["non_2xx_3xx"] else "",
                                        f"socket errors {r['socket_errors']}" if r["socket_errors"] else ""]))
        print(f"{r['server']:11} {r['route']:9} {r['status']:>6} {r['bytes']:>7} {r['rps']:>9.0f} "
              f"{r['ratio']:>8.2f} {r['p99_ms']:>8.2f} {r['p99_x_hello']:>8.2f}  {notes}")
    gunicorn_page = next((r for r in rows if r["server"] == "gunicorn" and r["route"] == "page"), None)
    goals = None
    if gunicorn_page:
        goals = {"ratio": gunicorn_page["ratio"] >= GOAL_RATIO, "p99": gunicorn_page["p99_ms"] <= GOAL_P99_MS,
                 "tail": gunicorn_page["p99_x_hello"] <= GOAL_TAIL, "page_found": gunicorn_page["status"] == 200}
        verdict = "met" if all(goals.values()) else "NOT met"
        print(f"goals under gunicorn (page ≥ {GOAL_RATIO}× hello, p99 ≤ {GOAL_P99_MS} ms and ≤ {GOAL_TAIL}× "
              f"hello's p99, status 200): {verdict}")
    conditional = [r for r in rows if r["route"] == "page 304"]
    print("conditional GET: " + (", ".join(f"{r['server']} → {r['status']}" for r in conditional)
                                 if conditional else "no ETag on the page"))
    return {"goals": goals, "conditional_get": {r["server"]: r["status"] for r in conditional}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--servers", default="waitress,gunicorn")
    parser.add_argument("--waitress-threads", type=int, default=4, help="as `ordermail serve` (default 4)")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        print("bench: wrk is missing (apt-get install wrk)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)   # "task queue depth" is the point of a load test
    folder = Path(tempfile.mkdtemp(prefix="ordermail-bench-page-"))
    try:
        port = free_port()
        config = write_config(folder, port)
        settings = load_settings(config)
        store = open_store(settings.database.url)
        token = build_order(settings, store)
        cost = app_cost(settings, store, token)
        rows = []
        for server in args.servers.split(","):
            if server == "waitress":
                with waitress_server(settings, store, args.waitress_threads):
                    wait_for(port)
                    rows += measure(f"waitress/{args.waitress_threads}", port, token, args)
            elif server == "gunicorn":
                with gunicorn("page:wsgi_app()", port, folder / "gunicorn.log",
                              {"ORDERMAIL_CONFIG": str(config)}, pythonpath=ROOT / "bench"):
                    wait_for(port)
                    rows += measure("gunicorn", port, token, args)
            else:
                parser.error(f"unknown server {server!r}")
        page_status = next(r["status"] for r in rows if r["route"] == "page")
        summary = report(rows, page_status, args)
        print("app alone, CPU µs per request: " + ", ".join(f"{k} {v:.0f}" for k, v in cost.items())
              + f" (page {cost['page'] / cost['hello']:.1f}× hello)")
        summary["app_cpu_us"] = cost
        print("BENCH_JSON " + json.dumps({"events": EVENTS, "duration_s": args.duration,
                                          "connections": args.connections, "wrk_threads": args.threads,
                                          "goal_ratio": GOAL_RATIO, "goal_p99_ms": GOAL_P99_MS, "goal_tail": GOAL_TAIL,
                                          "rows": rows, **summary}))
        store.close()
        return 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
