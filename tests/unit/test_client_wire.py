"""What the client does with answers the real API gives rarely: 503 with ``Retry-After``, proxies' pages,
an API that is down. A local HTTP server plays the API's part (the tests on the real API are in
tests/acceptance/test_client.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from interlock.client import (
    AsyncClient,
    Client,
    ConnectionFailed,
    InvalidResponse,
    RateLimited,
    RetryPolicy,
    ServerError,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from interlock.client.errors import retry_after_seconds
from interlock.errors import InterlockError
from testkit.processes import free_port

FAST = RetryPolicy(attempts=3, backoff=0.01, max_backoff=2.0)


class CannedApi(BaseHTTPRequestHandler):
    """Answers each request with the next canned ``(status, headers, body)``; records what it was sent."""

    answers: list[tuple[int, dict[str, str], bytes]] = []
    seen: list[tuple[str, str, dict[str, str]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        CannedApi.seen.append((self.command, self.path, dict(self.headers)))
        status, headers, body = CannedApi.answers.pop(0)
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def error(status: int, title: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    return status, headers, json.dumps({"title": title, "description": f"{title}, said the API"}).encode()


STATUS = (200, {}, json.dumps({"task_id": "t1", "state": "PENDING", "progress": 0}).encode())


@pytest.fixture
def canned() -> Iterator[str]:
    CannedApi.answers, CannedApi.seen = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), CannedApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_a_503_is_retried_after_its_retry_after_for_reads_only(canned: str) -> None:
    CannedApi.answers = [error(503, "Database connection reset", **{"Retry-After": "0"}), STATUS]
    with Client(canned, "k-secret", retry=FAST) as client:
        assert client.status("t1").state == "PENDING"
        assert len(CannedApi.seen) == 2

        CannedApi.answers = [error(503, "Broker unavailable", **{"Retry-After": "5"})]
        with pytest.raises(ServiceUnavailable) as unavailable:
            client.submit("not idempotent without a key")
        assert unavailable.value.retry_after == 5.0
        assert len(CannedApi.seen) == 3, "a submission without an idempotency key is not sent twice"

        CannedApi.answers = [error(503, "Broker unavailable", **{"Retry-After": "0"}), (202, {}, b'{"task_id": "t2"}')]
        assert client.submit("with a key", idempotency_key="k1").task_id == "t2"
        assert CannedApi.seen[-1][2]["Idempotency-Key"] == "k1"
        assert CannedApi.seen[-1][2]["Authorization"] == "Bearer k-secret"


def test_error_answers_keep_their_title_description_and_retry_after(canned: str) -> None:
    in_a_minute = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    CannedApi.answers = [
        error(429, "Too many sign-in attempts", **{"Retry-After": in_a_minute}),
        error(415, "Unsupported media type"),
        error(500, "Internal Server Error"),
    ]
    with Client(canned, retry=FAST) as client:
        with pytest.raises(RateLimited) as limited:
            client.status("t1")
        assert 50 < (limited.value.retry_after or 0) <= 60
        assert limited.value.description == "Too many sign-in attempts, said the API"
        with pytest.raises(UnsupportedMediaType):
            client.status("t1")
        with pytest.raises(ServerError) as failed:
            client.status("t1")
    assert failed.value.status == 500
    assert isinstance(failed.value, InterlockError)
    assert (
        str(failed.value)
        == "GET /agent/status/t1 answered 500 Internal Server Error: Internal Server Error, said the API"
    )


def test_an_answer_that_is_not_the_apis_json_is_invalid(canned: str) -> None:
    CannedApi.answers = [(200, {"Content-Type": "text/html"}, b"<html>Welcome to nginx!</html>"), (200, {}, b"{}")]
    with Client(canned) as client:
        with pytest.raises(InvalidResponse, match="answered 200 with a body that is not JSON"):
            client.status("t1")
        with pytest.raises(InvalidResponse, match="not the API's"):
            client.status("t1")


def test_an_api_that_is_down_is_retried_then_reported_without_the_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://user:pw@127.0.0.1:{free_port()}"
    with Client(url, "k-secret", retry=FAST) as client:
        assert "k-secret" not in repr(client)
        assert "pw" not in repr(client)
        with pytest.raises(ConnectionFailed) as down:
            client.submit("nobody listens")
    assert "cannot reach the Interlock API" in str(down.value)
    assert "pw@" not in str(down.value)
    assert len([r for r in caplog.records if "retry" in r.getMessage()]) == FAST.attempts
    assert "k-secret" not in caplog.text

    async def down_too() -> None:
        async with AsyncClient(url, "k-secret", retry=FAST) as client:
            await client.status("t1")

    with pytest.raises(ConnectionFailed):
        asyncio.run(down_too())


def test_result_polls_with_backoff_an_api_that_answers_at_once(canned: str) -> None:
    """A proxy that ends long requests early, or an API without ``?wait``: polled, not hammered."""
    not_ready = (202, {}, json.dumps({"task_id": "t1", "status": "not_ready", "state": "PENDING"}).encode())
    complete = (200, {}, json.dumps({"task_id": "t1", "status": "complete", "result": {"n": 1}}).encode())
    CannedApi.answers = [not_ready, not_ready, complete]
    with Client(canned) as client:
        assert client.result("t1", timeout=60) == {"n": 1}
    assert [path for _, path, _ in CannedApi.seen] == ["/agent/result/t1?wait=30.000"] * 3


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Thu, 01 Jan 2026 00:00:30 GMT", now=now) == 30.0
    assert retry_after_seconds("Wed, 31 Dec 2025 23:00:00 GMT", now=now) == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None
