"""Tracing's switch and its costs: off by default without importing OpenTelemetry, on by settings."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from actors.messages import task_message
from interlock import tracing
from interlock.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure(Settings.from_env({}), service="interlock-test", exporter=exporter)
    yield exporter
    tracing.shutdown()


def test_tracing_is_off_unless_an_exporter_is_named() -> None:
    def exporter(**env: str) -> str:
        return Settings.from_env(env).traces_exporter

    assert exporter() == ""
    assert exporter(INTERLOCK_OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318") == "otlp"
    assert exporter(OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318") == "otlp"
    assert exporter(OTEL_TRACES_EXPORTER="otlp") == "otlp"
    assert exporter(OTEL_TRACES_EXPORTER="console") == "console"
    assert exporter(OTEL_TRACES_EXPORTER="none", OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318") == ""
    assert exporter(OTEL_TRACES_EXPORTER="none", INTERLOCK_OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4318") == "otlp"
    with pytest.raises(SettingsError, match="OTEL_TRACES_EXPORTER"):
        exporter(OTEL_TRACES_EXPORTER="jaeger")


def test_the_traces_endpoint_is_the_collectors_v1_traces() -> None:
    def endpoint(**env: str) -> str:
        return Settings.from_env(env).traces_endpoint

    assert endpoint() == "http://localhost:4318/v1/traces"
    assert endpoint(OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318/") == "http://collector:4318/v1/traces"
    assert (
        endpoint(
            INTERLOCK_OTEL_EXPORTER_OTLP_ENDPOINT="http://tempo:4318/v1/traces",
            OTEL_EXPORTER_OTLP_ENDPOINT="http://other:4318",
        )
        == "http://tempo:4318/v1/traces"
    )


def test_off_every_span_is_the_shared_null_span_and_messages_carry_no_trace() -> None:
    assert not tracing.enabled()
    assert not tracing.configure(Settings.from_env({}), service="interlock-test")
    assert tracing.start("a", {"x": 1}) is tracing.NULL_SPAN
    with tracing.span("b") as span:
        assert span is tracing.NULL_SPAN
        assert tracing.traceparent() is None
        assert "traceparent" not in task_message(queue="q", actor="a", task_id="t").options


def test_a_message_made_inside_a_span_carries_its_context(spans: InMemorySpanExporter) -> None:
    with tracing.span("submit") as span:
        message = task_message(queue="q", actor="a", task_id="t", priority=4)
        assert message.options["traceparent"] == tracing.traceparent(span)
    with tracing.span("run", parent=message.options["traceparent"]):
        pass
    submitted, ran = spans.get_finished_spans()
    assert ran.context.trace_id == submitted.context.trace_id
    assert ran.parent is not None
    assert ran.parent.span_id == submitted.context.span_id
    assert message.options["broker_priority"] == 4


def test_an_exception_fails_the_span_and_none_attributes_are_left_out(spans: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError, match="boom"), tracing.span("step", {"kept": 1, "left_out": None}):
        raise ValueError("boom")
    [span] = spans.get_finished_spans()
    assert dict(span.attributes or {}) == {"kept": 1}
    assert span.status.description == "ValueError: boom"
    assert [event.name for event in span.events] == ["exception"]


def test_configured_once_later_settings_change_nothing(spans: InMemorySpanExporter) -> None:
    assert tracing.configure(Settings.from_env({}), service="interlock-api")
    with tracing.span("still in memory"):
        pass
    assert [s.name for s in spans.get_finished_spans()] == ["still in memory"]


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector that keeps what it is sent."""

    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


def test_an_otlp_endpoint_turns_tracing_on_and_spans_reach_the_collector() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        settings = Settings.from_env({"INTERLOCK_OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
        assert tracing.configure(settings, service="interlock-test")
        with tracing.span("sent to the collector"):
            pass
        tracing.shutdown()  # sends what the batch still holds
        assert not tracing.enabled()
    finally:
        server.shutdown()
    [(path, content_type, body)] = _Collector.received
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    assert b"sent to the collector" in body
    assert b"interlock-test" in body  # the service name


def test_off_no_opentelemetry_module_is_imported_by_the_api_and_a_task_run(tmp_path: Path) -> None:
    """In a fresh interpreter: the entry points import and a task runs on SQLite and the
    in-process broker through the API, its steps and LLM calls, with nothing of OpenTelemetry loaded."""
    script = textwrap.dedent(
        f"""
        import sys
        import interlock.cli.dev, interlock.cli.worker, web.wsgi  # the entry points that configure tracing
        from interlock.settings import Settings
        from models.migrations import upgrade
        from tests.stack import start_stack, stop_stack
        from tests.support import wait_for_state

        settings = Settings.from_env({{}}, database_url="sqlite:///{tmp_path / "off.db"}", auth="off", worker_threads=2)
        upgrade(settings)
        stack = start_stack(settings)
        try:
            task_id = stack.submit(query="untraced", workflow="checkpointed")
            wait_for_state(stack.runtime.sessions, task_id, "SUCCESS")
        finally:
            stop_stack(stack)
        print(sorted(name for name in sys.modules if name.split(".")[0] == "opentelemetry"))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
