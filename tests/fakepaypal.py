"""A fake of PayPal's IPN verification endpoint: a real HTTP server on loopback.

It answers each post-back from a script (`"VERIFIED"`, `"INVALID"`, or an
HTTP status such as 503), repeating the last entry once the script runs
out, and records what it was sent. "PayPal cannot be reached" is a port
where nothing listens (`closed_port`).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from daemonproc import free_port

PATH = "/cgi-bin/webscr"


@dataclass(frozen=True)
class PostBack:
    path: str
    headers: dict
    body: bytes


class FakePayPal:
    def __init__(self, script=("VERIFIED",), port: int | None = None):
        self.script = list(script)
        self.received: list[PostBack] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = fake._record(PostBack(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status, text = (200, answer.encode()) if isinstance(answer, str) else (answer, b"try later")
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=UTF-8")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port or 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}{PATH}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _record(self, post: PostBack):
        with self._lock:
            self.received.append(post)
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def __enter__(self) -> "FakePayPal":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port_url() -> str:
    """A verification URL where nothing listens: every connection is refused."""
    return f"http://127.0.0.1:{free_port()}{PATH}"
