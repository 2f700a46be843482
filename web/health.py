"""Liveness and readiness: is the process up; can it reach the database and the schema head; and
how the broker and the outbox are doing.

Only the database and the schema decide readiness: submissions are committed to the outbox and
accepted while RabbitMQ is down (they run when it is back), so an API whose broker is unreachable
still serves. ``/readyz`` reports the broker's state and the outbox's backlog (messages due and not
yet published, and the oldest one's age) for the operator to alert on.

``/readyz`` is public and probed often, so it stays cheap and bounded: one pooled connection and
``SELECT 1`` per probe; the schema's revision is read at most every few seconds (the code's own
head once per process); the broker is probed with a fresh AMQP connection whose every timeout is
about a second, at most once every two seconds, so a broker that accepts connections and never
answers makes the probe fail fast instead of hanging it.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import falcon
import pika
from sqlalchemy import Engine, text
from sqlalchemy.orm import sessionmaker

from models.base import as_utc, utcnow
from models.migrations import SchemaHead
from models.scheduled import pending_summary

__all__ = [
    "HealthResource",
    "ReadyResource",
    "CachedCheck",
    "rabbitmq_probe",
    "SCHEMA_CHECK_SECONDS",
    "BROKER_CHECK_SECONDS",
]

T = TypeVar("T")

#: How long a probe reuses the database's schema revision before reading it again.
SCHEMA_CHECK_SECONDS = 5.0
#: How long a probe reuses the broker's answer (or failure) before connecting again.
BROKER_CHECK_SECONDS = 2.0
#: Each of the broker probe's timeouts: TCP connect, socket reads, the whole AMQP handshake.
BROKER_TIMEOUT_SECONDS = 1.0


class CachedCheck(Generic[T]):
    """Runs ``check`` at most once per ``seconds`` in this process; calls in between get its outcome.

    Arguments are passed to ``check`` when it runs (and ignored when the outcome is reused).
    A failure is remembered as long as a success, so a down dependency is not hammered by every
    probe. Concurrent callers wait for the one check in flight rather than starting their own.
    """

    def __init__(self, check: Callable[..., T], seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.check = check
        self.seconds = seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._at: float | None = None
        self._value: T | None = None
        self._error: Exception | None = None

    def __call__(self, *args: Any) -> T:
        with self._lock:
            if self._at is None or self.clock() - self._at >= self.seconds:
                try:
                    self._value, self._error = self.check(*args), None
                except Exception as exc:  # noqa: BLE001 - remembered and re-raised to every caller
                    self._value, self._error = None, exc
                self._at = self.clock()
            if self._error is not None:
                raise self._error
            return self._value  # type: ignore[return-value]


def rabbitmq_probe(parameters: pika.ConnectionParameters, *, timeout: float = BROKER_TIMEOUT_SECONDS) -> None:
    """Open and close one AMQP connection with every timeout at ``timeout`` (pika's are 10-15 s)."""
    probe = copy.deepcopy(parameters)
    probe.socket_timeout = timeout
    probe.stack_timeout = timeout * 1.5
    probe.blocked_connection_timeout = timeout
    probe.connection_attempts = 1
    probe.retry_delay = 0
    pika.BlockingConnection(probe).close()


class HealthResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


class ReadyResource:
    def __init__(self, engine: Engine, broker_check: Callable[[], None]) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine)
        self.schema_check = CachedCheck(SchemaHead().compare, SCHEMA_CHECK_SECONDS)
        self.broker_check = CachedCheck(broker_check, BROKER_CHECK_SECONDS)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        checks: dict[str, Any] = {}
        outbox: dict[str, Any] = {}
        ready = True
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
                checks["database"] = "ok"
                current, detail = self.schema_check(connection)
            checks["schema"] = "ok" if current else f"behind: {detail}"
            ready = ready and current
            if current:
                with self.sessions() as session:
                    pending, oldest = pending_summary(session)
                age = (utcnow() - (as_utc(oldest) or utcnow())).total_seconds()
                outbox = {"pending": pending, "oldest_pending_seconds": round(max(0.0, age), 3)}
        except Exception as exc:  # noqa: BLE001 - a probe reports failures, it does not raise them
            checks["database"] = f"unreachable: {type(exc).__name__}"
            ready = False
        try:
            self.broker_check()
            checks["broker"] = "ok"
        except Exception as exc:  # noqa: BLE001 - same: report, do not raise
            # Not a reason to stop serving: submissions wait in the outbox until the broker is back.
            checks["broker"] = f"unreachable: {type(exc).__name__}"
        resp.status = falcon.HTTP_200 if ready else falcon.HTTP_503
        resp.media = {"status": "ready" if ready else "not ready", "checks": checks, "outbox": outbox}
