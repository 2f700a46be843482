"""The CLI's client commands turn every failure of the HTTP call into one line on stderr, never a traceback."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from testkit.processes import ROOT


class _NotAnApi(BaseHTTPRequestHandler):
    """What a proxy or a wrong ``--url`` answers: 200 with an HTML page."""

    def do_GET(self) -> None:
        body = b"<html><body>Welcome to nginx!</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def not_an_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotAnApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_an_answer_that_is_not_json_is_reported_in_one_line(not_an_api: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "interlock.cli", "status", "abc", "--url", not_an_api],
        env={"PATH": "/usr/bin:/bin"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.strip() == "interlock: GET /agent/status/abc answered 200 with a body that is not JSON"
