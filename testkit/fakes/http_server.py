"""A web server on loopback standing in for the outside world the URL tools reach.

Routes (``GET``):

* ``/page``: an HTML page with a title, text, and script/style/noscript that must not be extracted
* ``/json``: ``{"ok": true, "path": ..., "query": {...}}``
* ``/slow?seconds=N``: waits N seconds (stop() cuts it short), then ``/page``
* ``/trickle?seconds=N``: an HTML page whose headers come at once and whose body comes one byte
  every 0.2 s for N seconds: never silent long enough for a per-read timeout to fire
* ``/error``: always 500; ``/status/<code>``: always that status
* ``/limited?after=S``: always 429 with ``Retry-After: S``
* ``/redirect?to=URL``: 302 to URL; ``/redirect-private``: 302 to ``http://10.0.0.1/``;
  ``/redirect-metadata``: 302 to ``http://169.254.169.254/latest/meta-data/``; ``/loop``: 302 to itself
* ``/big?size=N``: an HTML page of N bytes with ``Content-Length``; ``/big-stream?size=N``: the same
  without ``Content-Length`` (the client only learns the size by reading)
* ``/file.pdf``: ``application/pdf``; ``/plain``: ``text/plain``

Any other path answers like ``/json``. ``fail_next(path, n, status, retry_after)`` makes the next
``n`` requests to a path fail; ``count(path)`` says how many requests reached a path.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Interlock test page</title>
<style>body { color: red; } .hidden-style-marker {}</style>
<script>var scriptMarker = "do not extract me";</script>
</head>
<body>
<h1>Durable execution</h1>
<p>Tasks survive   worker crashes.</p>
<noscript>noscript marker</noscript>
<script type="application/ld+json">{"jsonld": "marker"}</script>
<p>Caf\u00e9 cr\u00e8me \u2014 unicode survives.</p>
</body></html>
"""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeWebServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that give up (size caps, timeouts) close mid-answer: expected, not noise."""


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, bodies may end at connection close.

    def log_message(self, format: str, *args: Any) -> None:
        """No per-request stderr lines."""

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        fake = cast(_Server, self.server).fake
        parts = urlsplit(self.path)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        fake._record(path, dict(self.headers))
        fault = fake._take_fault(path)
        if fault is not None:
            status, retry_after = fault
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            self._json(status, {"error": f"scripted failure {status}"}, headers)
            return
        if path == "/page":
            self._send(200, PAGE.encode(), "text/html; charset=utf-8")
        elif path == "/slow":
            fake._stopped.wait(float(query.get("seconds", "5")))
            self._send(200, PAGE.encode(), "text/html; charset=utf-8")
        elif path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            try:
                self.wfile.write(b"<html><body>")
                self.wfile.flush()
                for _ in range(int(float(query.get("seconds", "5")) / 0.2)):
                    if fake._stopped.wait(0.2):
                        return
                    self.wfile.write(b"x")
                    self.wfile.flush()
                self.wfile.write(b"</body></html>")
            except OSError:
                return  # the client gave up
        elif path == "/error":
            self._json(500, {"error": "always broken"})
        elif path.startswith("/status/"):
            self._json(int(path.rsplit("/", 1)[1]), {"error": "as requested"})
        elif path == "/limited":
            self._json(429, {"error": "slow down"}, {"Retry-After": query.get("after", "1")})
        elif path == "/redirect":
            self._redirect(query["to"])
        elif path == "/redirect-private":
            self._redirect("http://10.0.0.1/admin")
        elif path == "/redirect-metadata":
            self._redirect("http://169.254.169.254/latest/meta-data/")
        elif path == "/loop":
            self._redirect("/loop")
        elif path == "/big":
            size = int(query.get("size", "1000000"))
            self._send(200, b"<html><body>" + b"x" * size + b"</body></html>", "text/html")
        elif path == "/big-stream":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            remaining = int(query.get("size", "1000000"))
            try:
                while remaining > 0 and not fake._stopped.is_set():
                    chunk = min(remaining, 16384)
                    self.wfile.write(b"y" * chunk)
                    remaining -= chunk
            except OSError:
                return  # the client stopped reading: that is the point
        elif path == "/file.pdf":
            self._send(200, b"%PDF-1.4 not really", "application/pdf")
        elif path == "/plain":
            self._send(200, b"just text", "text/plain")
        else:
            self._json(200, {"ok": True, "path": path, "query": query})


class FakeWebServer:
    """Threaded HTTP server on 127.0.0.1 with scripted failures and a request counter per path."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path, headers) in arrival order
        self._faults: dict[str, list[tuple[int, int, str | None]]] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeWebServer:
        self._stopped.clear()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="fake-web"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeWebServer:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("FakeWebServer is not started")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def count(self, path: str | None = None) -> int:
        """Requests that reached ``path`` (any path if None)."""
        with self._lock:
            return sum(self._counts.values()) if path is None else self._counts[path]

    def fail_next(self, path: str, count: int = 1, *, status: int = 500, retry_after: str | None = None) -> None:
        """The next ``count`` requests to ``path`` answer ``status`` (with ``Retry-After`` if given)."""
        with self._lock:
            self._faults.setdefault(path, []).append((count, status, retry_after))

    def _record(self, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self._counts[path] += 1
            self.requests.append((path, headers))

    def _take_fault(self, path: str) -> tuple[int, str | None] | None:
        with self._lock:
            faults = self._faults.get(path)
            if not faults:
                return None
            remaining, status, retry_after = faults[0]
            if remaining <= 1:
                faults.pop(0)
            else:
                faults[0] = (remaining - 1, status, retry_after)
            return status, retry_after
