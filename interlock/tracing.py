"""Optional OpenTelemetry tracing: one trace per task, from its HTTP submission to its steps and calls.

Off unless the settings name an exporter (``INTERLOCK_OTEL_EXPORTER_OTLP_ENDPOINT``, or the
standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_TRACES_EXPORTER``). When off, nothing from
``opentelemetry`` is imported (a plain install does not have it) and :func:`span` and :func:`start`
hand back one shared object that does nothing, so the hooks in the API and the worker cost a
function call. :func:`configure` runs once per process at its start; the API's submission span's
context travels to the worker in the message as a W3C ``traceparent``.

The rest of Interlock sees only this module's small interface (:class:`Span`), never
OpenTelemetry's types.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .settings import Settings

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

__all__ = [
    "Span",
    "Value",
    "Attributes",
    "Kind",
    "NULL_SPAN",
    "configure",
    "shutdown",
    "enabled",
    "start",
    "span",
    "traceparent",
]

logger = logging.getLogger(__name__)

#: Attribute values OpenTelemetry takes.
Value = str | bool | int | float
#: A span's attributes by their dotted names; ``None`` values are left out.
Attributes = Mapping[str, Value | None]
Kind = Literal["internal", "server", "client", "producer", "consumer"]


class Span(Protocol):
    """A span as the rest of Interlock uses it."""

    def set(self, attributes: Attributes) -> None:
        """Add attributes (``None`` values are left out)."""
        ...

    def fail(self, exc: BaseException) -> None:
        """Mark it failed (status ERROR) with the exception recorded."""
        ...

    def end(self, end_ns: int | None = None) -> None:
        """End it (and, for a current span, make its parent current again)."""
        ...

    def __enter__(self) -> Span: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class _NullSpan:
    """The span of tracing turned off: one shared instance that does nothing."""

    __slots__ = ()

    def set(self, attributes: Attributes) -> None:
        return None

    def fail(self, exc: BaseException) -> None:
        return None

    def end(self, end_ns: int | None = None) -> None:
        return None

    def __enter__(self) -> Span:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        return None


NULL_SPAN: Span = _NullSpan()

_lock = threading.Lock()
_provider: TracerProvider | None = None
_tracer: Tracer | None = None


def configure(settings: Settings, *, service: str, exporter: SpanExporter | None = None) -> bool:
    """Turn tracing on in this process if ``settings`` (or an ``exporter`` handed in) say so.

    Called at each process's start; returns whether tracing is on. An ``exporter`` (a test's
    in-memory one) gets every span as it ends. Once on, later calls change nothing, so a test's
    configuration survives the API and worker factories it then calls.
    """
    global _provider, _tracer
    kind = "given" if exporter is not None else settings.traces_exporter
    with _lock:
        if _tracer is not None or not kind:
            return _tracer is not None
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.otel_service_name or service}))
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
            # Libraries the agents bring (their own instrumentation) export through the same pipeline.
            trace.set_tracer_provider(provider)
        _provider, _tracer = provider, provider.get_tracer("interlock")
    logger.info("tracing on: %s spans of %s", kind, settings.otel_service_name or service)
    return True


def _exporter(settings: Settings) -> SpanExporter:
    if settings.traces_exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise RuntimeError(
            "tracing is configured but the OTLP exporter is not installed: pip install 'interlock[tracing]'"
        ) from exc
    return OTLPSpanExporter(endpoint=settings.traces_endpoint)


def shutdown() -> None:
    """Send the spans still buffered and turn tracing off (at process exit, or after a test)."""
    global _provider, _tracer
    with _lock:
        provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def enabled() -> bool:
    return _tracer is not None


def start(
    name: str,
    attributes: Attributes | None = None,
    *,
    parent: str | None = None,
    start_ns: int | None = None,
    current: bool = False,
    kind: Kind = "internal",
) -> Span:
    """Start a span, a child of ``parent`` (a ``traceparent``) or else of the current span.

    ``current``: the span is the current one (the parent of spans started inside) until it ends,
    which must happen in the same thread.
    """
    tracer = _tracer
    if tracer is None:
        return NULL_SPAN
    from opentelemetry import context, trace

    parent_context = _extract(parent) if parent else None
    otel_span = tracer.start_span(
        name,
        context=parent_context,
        kind=trace.SpanKind[kind.upper()],
        attributes=_present(attributes) if attributes else None,
        start_time=start_ns,
    )
    token = context.attach(trace.set_span_in_context(otel_span)) if current else None
    return _OtelSpan(otel_span, token)


def span(
    name: str, attributes: Attributes | None = None, *, parent: str | None = None, kind: Kind = "internal"
) -> Span:
    """``with span("name", {...}) as s:`` a current span around a block; an exception fails it."""
    return start(name, attributes, parent=parent, current=True, kind=kind)


def traceparent(of: Span | None = None) -> str | None:
    """The W3C ``traceparent`` header of span ``of`` (default: the current span), for a message to
    carry; ``None`` without a span."""
    if _tracer is None:
        return None
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    context = trace.set_span_in_context(of._span) if isinstance(of, _OtelSpan) else None
    TraceContextTextMapPropagator().inject(carrier, context=context)
    return carrier.get("traceparent")


def _present(attributes: Attributes) -> dict[str, Value]:
    return {key: value for key, value in attributes.items() if value is not None}


def _extract(header: str) -> Context:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({"traceparent": header})


class _OtelSpan:
    """An OpenTelemetry span behind :class:`Span`; built only while tracing is on."""

    __slots__ = ("_span", "_token")

    def __init__(self, otel_span: Any, token: object | None) -> None:
        self._span = otel_span
        self._token = token

    def set(self, attributes: Attributes) -> None:
        self._span.set_attributes(_present(attributes))

    def fail(self, exc: BaseException) -> None:
        from opentelemetry.trace import Status, StatusCode

        self._span.record_exception(exc)
        self._span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:500]))

    def end(self, end_ns: int | None = None) -> None:
        if self._token is not None:
            from opentelemetry import context

            context.detach(self._token)  # type: ignore[arg-type]
            self._token = None
        self._span.end(end_time=end_ns)

    def __enter__(self) -> Span:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is not None:
            self.fail(exc)
        self.end()
