"""Dramatiq middleware that keeps each task's durable state and lease in the database.

Every transition (PENDING → PROCESSING → RETRY → SUCCESS / FAILURE) is written by whichever
worker process handles the message, so status is right on any host. A task is run only by the
worker that holds its lease: a redelivered duplicate (RabbitMQ's ``consumer_timeout``, a crash)
is skipped while the lease is alive, and a task that keeps killing its worker is dead-lettered
after ``max_deliveries`` starts.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from interlock.logs import task_id_var
from models.tasks import ClaimOutcome, TaskState, claim_task, finish_task, mark_retrying

from .runtime import Runtime

__all__ = ["TaskTracking", "TaskRun", "current_run", "task_id_of"]

logger = logging.getLogger(__name__)

_local = threading.local()


@dataclass
class TaskRun:
    task_id: str
    attempt: int
    input: dict[str, Any]
    started: float


def current_run() -> TaskRun | None:
    """The task the calling worker thread is running, if any."""
    return getattr(_local, "run", None)


def task_id_of(message: Any) -> str | None:
    """Interlock messages carry exactly one thing: the task id."""
    if message.args:
        return str(message.args[0])
    value = message.kwargs.get("task_id")
    return str(value) if value else None


class TaskTracking(Middleware):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.processed = 0

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        task_id = task_id_of(message)
        if task_id is None:
            return
        settings = self.runtime.settings
        with self.runtime.sessions.begin() as session:
            claim = claim_task(
                session,
                task_id,
                owner=self.runtime.owner,
                lease_seconds=settings.lease_seconds,
                max_deliveries=settings.max_deliveries,
            )
        if claim.outcome is ClaimOutcome.CLAIMED:
            _local.run = TaskRun(task_id, claim.attempts, claim.input or {}, time.monotonic())
            task_id_var.set(task_id)
            return
        if claim.outcome is ClaimOutcome.EXHAUSTED:
            error = (
                f"task started {claim.attempts - 1} times without finishing (worker crashes or "
                f"redeliveries); INTERLOCK_MAX_DELIVERIES={settings.max_deliveries}. Dead-lettered."
            )
            logger.error("poison message for task %s: %s", task_id, error)
            with self.runtime.sessions.begin() as session:
                finish_task(session, task_id, state=TaskState.FAILURE, owner=self.runtime.owner, error=error)
            message.fail()
        elif claim.outcome is ClaimOutcome.MISSING:
            logger.warning("message %s names unknown task %s; dropped", message.message_id, task_id)
        else:
            logger.info(
                "task %s is %s elsewhere or finished; duplicate delivery skipped", task_id, claim.state
            )
        raise dramatiq.middleware.SkipMessage(claim.outcome.value)

    def before_enqueue(self, broker: dramatiq.Broker, message: Any, delay: int | None) -> None:
        # Retries re-enqueue the failed message with a delay: release the lease and say why
        # *before* the retry is parked, so the retry can never find its own task still leased.
        run = current_run()
        exception = getattr(message, "_exception", None)
        if not delay or run is None or exception is None or task_id_of(message) != run.task_id:
            return
        with self.runtime.sessions.begin() as session:
            mark_retrying(
                session, run.task_id, owner=self.runtime.owner, error=_describe(exception), delay_ms=delay
            )

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        run = current_run()
        if run is None:
            return
        _local.run = None
        self.processed += 1
        try:
            if exception is None:
                state, error, value = (
                    TaskState.SUCCESS,
                    None,
                    result if isinstance(result, dict) else {"value": result},
                )
            elif message.failed:
                from .errors import TaskCancelled

                state = TaskState.CANCELLED if isinstance(exception, TaskCancelled) else TaskState.FAILURE
                error, value = _describe(exception), None
            else:
                return  # a retry: recorded by before_enqueue
            with self.runtime.sessions.begin() as session:
                fenced = finish_task(
                    session, run.task_id, state=state, owner=self.runtime.owner, result=value, error=error
                )
            if not fenced:
                logger.warning(
                    "task %s lost its lease before it finished; its outcome was discarded", run.task_id
                )
        finally:
            task_id_var.set(None)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        _local.run = None
        task_id_var.set(None)


def _describe(exception: BaseException) -> str:
    return f"{type(exception).__name__}: {exception}"[:4000]
