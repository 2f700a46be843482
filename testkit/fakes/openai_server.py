"""OpenAI-compatible HTTP server on loopback: the only stand-in for the LLM provider in tests.

The real ``openai`` client talks to it over HTTP, so retries, timeouts, error mapping and
Retry-After handling are exercised exactly as in production; only the model is fake.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast

# status -> (error.type, error.code), as the real API reports them.
_ERROR_KINDS = {
    400: ("invalid_request_error", "invalid_request"),
    404: ("invalid_request_error", "unknown_url"),
    429: ("requests", "rate_limit_exceeded"),
}


@dataclass
class _Fault:
    remaining: int
    match: str | None
    status: int | None = None  # None: hang `seconds`, then answer normally
    retry_after: float | None = None
    seconds: float = 0.0


def message_text(body: Any) -> str:
    """Concatenate all message contents (strings or text parts); faults and count() match on this."""
    messages = body.get("messages") if isinstance(body, dict) else None
    parts: list[str] = []
    for msg in messages if isinstance(messages, list) else []:
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "".join(parts)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOpenAIServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Timed-out clients close their socket mid-answer; that is expected, not noise."""


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so nothing keeps being served after stop().

    def log_message(self, format: str, *args: Any) -> None:
        """Keep pytest output clean: no per-request stderr lines."""

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in {
            "Content-Type": "application/json",
            "Content-Length": str(len(data)),
            "x-request-id": f"req_{uuid.uuid4().hex[:16]}",
            **(headers or {}),
        }.items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(data)
        except OSError:  # client gave up (timeout) before we answered
            self.close_connection = True

    def send_error_json(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        default = ("server_error" if status >= 500 else "invalid_request_error", None)
        kind, code = _ERROR_KINDS.get(status, default)
        self.send_json(status, {"error": {"message": message, "type": kind, "code": code}}, headers)

    def _route(self) -> tuple[FakeOpenAIServer, str]:
        fake = cast(_HTTPServer, self.server).fake
        fake.delay(fake.latency)
        return fake, self.path.split("?", 1)[0].rstrip("/")

    def do_GET(self) -> None:
        _, path = self._route()
        if path == "/v1/models":
            model = {"id": "fake-model", "object": "model", "created": 0, "owned_by": "interlock-tests"}
            self.send_json(200, {"object": "list", "data": [model]})
        else:
            self.send_error_json(404, f"Unknown path {self.path}")

    def do_POST(self) -> None:
        try:
            raw = self.rfile.read(max(int(self.headers.get("Content-Length") or 0), 0))
        except ValueError:
            raw = b""
        fake = cast(_HTTPServer, self.server).fake
        fake.entered()
        try:
            fake, path = self._route()
            if path == "/v1/chat/completions":
                fake.handle_chat(self, raw)
            else:
                self.send_error_json(404, f"Unknown path {self.path}")
        finally:
            fake.left()


class FakeOpenAIServer:
    """Loopback OpenAI-compatible server with scripted faults and request recording."""

    def __init__(self, port: int = 0, latency: float = 0.0) -> None:
        self.latency = latency  # seconds slept before answering every request
        self.reply: Callable[[dict[str, Any]], str] | None = None  # overrides the answer text
        self.requests: list[dict[str, Any]] = []  # {"body", "status", "time"} per chat request
        self.in_flight = 0  # POSTs being answered now
        self.max_in_flight = 0  # the most at once since start (or reset)
        self._port = port
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeOpenAIServer:
        """Bind and serve from a daemon thread, so a forgotten stop() never blocks interpreter exit."""
        if self._httpd is None:
            self._stopped.clear()
            self._httpd = _HTTPServer(("127.0.0.1", self._port), _Handler)
            self._httpd.fake = self
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                daemon=True,
                name="fake-openai",
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; wakes pending latency/hang sleeps so shutdown takes milliseconds."""
        self._stopped.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """Actual bound port (useful with port=0)."""
        if self._httpd is None:
            raise RuntimeError("FakeOpenAIServer is not started")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """Pass to ``openai.OpenAI(base_url=...)``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def fail_next(
        self, count: int = 1, status: int = 500, retry_after: float | None = None, match: str | None = None
    ) -> None:
        """Next ``count`` matching chat requests get HTTP ``status``: simulates outages and rate limits."""
        if count > 0:
            with self._lock:
                self._faults.append(_Fault(count, match, status=status, retry_after=retry_after))

    def hang_next(self, count: int = 1, seconds: float = 30.0, match: str | None = None) -> None:
        """Next ``count`` matching chat requests stall ``seconds``, then answer: triggers client timeouts."""
        if count > 0:
            with self._lock:
                self._faults.append(_Fault(count, match, seconds=seconds))

    def count(self, match: str | None = None, status: int | None = 200) -> int:
        """Recorded chat requests whose messages contain ``match`` and answered ``status`` (None = any)."""
        with self._lock:
            records = list(self.requests)
        return sum(
            1
            for r in records
            if (match is None or match in message_text(r["body"])) and (status is None or r["status"] == status)
        )

    def reset(self) -> None:
        """Forget scripted faults and recorded requests between test phases."""
        with self._lock:
            self._faults.clear()
            self.requests.clear()
            self.max_in_flight = self.in_flight

    def entered(self) -> None:
        """A POST arrived: count it in flight (``max_in_flight`` shows how many calls a client overlaps)."""
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def left(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def delay(self, seconds: float) -> None:
        """Sleep that stop() interrupts, so hung requests never delay teardown."""
        if seconds > 0:
            self._stopped.wait(seconds)

    def _take_fault(self, text: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:  # FIFO: first scripted fault that applies to this request
                if fault.match is None or fault.match in text:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def handle_chat(self, handler: _Handler, raw: bytes) -> None:
        """Answer one POST /v1/chat/completions (called from the handler thread)."""
        try:
            body = json.loads(raw)
            if not isinstance(body, dict) or body.get("stream"):
                raise ValueError("need a JSON object without stream=true (streaming is not faked)")
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            handler.send_error_json(400, f"Bad request body: {exc}")
            return
        fault = self._take_fault(message_text(body))
        status, content, error = 200, "", ""
        if fault is not None and fault.status is not None:
            status, error = fault.status, f"Scripted fake failure (HTTP {fault.status})"
        else:
            try:
                content = self.reply(body) if self.reply else self._default_reply(body)
            except Exception as exc:  # noqa: BLE001 - a broken hook must surface as a provider error
                status, error = 500, f"reply hook raised: {exc!r}"
        with self._lock:  # record before answering: count() is race-free once the client call returns
            self.requests.append({"body": body, "status": status, "time": time.monotonic(), "wall": time.time()})
        if fault is not None and fault.status is None:
            self.delay(fault.seconds)
        if status != 200:
            headers = {}
            if fault is not None and fault.retry_after is not None:
                ra = float(fault.retry_after)
                headers["Retry-After"] = str(int(ra)) if ra.is_integer() else str(ra)
            handler.send_error_json(status, error, headers)
            return
        prompt_tokens, completion_tokens = len(message_text(body)) // 4 + 1, len(content) // 4 + 1
        handler.send_json(
            200,
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake-model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
        )

    @staticmethod
    def _default_reply(body: dict[str, Any]) -> str:
        users = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
        return "fake-llm answer to: " + message_text({"messages": users[-1:]})[:200]
