"""Dramatiq middleware that keeps each task's durable state and lease in the database.

Every transition (PENDING → PROCESSING → RETRY → SUCCESS / FAILURE) is written by whichever
worker process handles the message, so status is right on any host. A task is run only by the
worker that holds its lease: a redelivered duplicate (RabbitMQ's ``consumer_timeout``, a crash)
is skipped while the lease is alive, and a task that keeps killing its worker is dead-lettered
after ``max_deliveries`` starts (``actors.middleware.poison``). The claim also decides the
tenant's concurrency cap (``actors.middleware.admission``).

A claimed task is in the process's registry of running tasks (``Runtime.running``) until its
outcome is written, and only those leases are renewed. The writes that start, retry and end a
task are tried again through a short database outage; if one still fails, the lease is simply no
longer renewed, so it lapses and another worker takes the task up: never leased for good.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware, SkipMessage
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from actors.cancellation import record_stopped
from actors.catalogue import WorkflowSpec, spec_for_actor
from actors.errors import TaskCancelled, describe_error
from actors.messages import interlock_task_id, task_id_of
from actors.middleware.admission import admitted_at, wait_for_tenant
from actors.middleware.current_run import TaskRun, current_run, start_run
from actors.middleware.hand_back import hand_back_in_outage
from actors.middleware.poison import fail_poisoned, max_deliveries
from actors.middleware.task_log import log_outcome
from actors.orchestration import is_suspended, wake_parent
from actors.running import RunningTask
from actors.runtime import Runtime
from interlock.logs import task_id_var
from models import task_lifecycle
from models.database import is_transient, retry_transient
from models.task_lifecycle import Claim, ClaimOutcome
from models.task_transitions import Transition, mark_retrying, record_event
from models.tasks import TaskState

__all__ = ["Claiming", "release_for_retry", "WRITE_RETRY_SECONDS", "ERROR_CHARS"]

logger = logging.getLogger(__name__)

#: Seconds the writes that claim, retry or end a task keep trying through a database restart (or a
#: lost connection); past that a claimed task's lease lapses and another worker takes it up. Their
#: row locks are taken in one order (``models.task_transitions.lock_in_order``), so they do not
#: deadlock one another: retrying is not what resolves that.
WRITE_RETRY_SECONDS = 15.0
#: How much of a task's error its row and history keep.
ERROR_CHARS = 4000


class Claiming(Middleware):
    """Claims the task's lease before it runs; writes how it ended after Retries decided."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        task_id = interlock_task_id(self.runtime.catalogue, message)
        if task_id is None:
            return  # a plain Dramatiq actor on the same broker: not an Interlock task
        settings = self.runtime.settings
        claim_args: dict[str, Any] = {
            "owner": self.runtime.owner,
            "lease_seconds": settings.lease_seconds,
            "max_deliveries": max_deliveries(settings, message),
            "admitted_at": admitted_at(),
        }
        try:
            # A claim whose commit was cut off may have taken the lease: the second try then finds
            # it held and skips the message, and the lease, renewed by no one, lapses.
            claim = retry_transient(
                lambda: self._claim(task_id, claim_args), within=WRITE_RETRY_SECONDS, what=f"claiming task {task_id}"
            )
        except DBAPIError as exc:
            if not is_transient(exc):
                raise
            hand_back_in_outage(broker, message, task_id, exc)
        if claim is None:
            wait_for_tenant(broker, message, task_id)
        if claim.outcome is ClaimOutcome.CLAIMED:
            priority = int(message.options.get("broker_priority") or 0)
            hard, soft = self._spec(message.actor_name).limits(settings)
            running = RunningTask.starting_now(task_id, time_limit=hard, soft_time_limit=soft, io=self.runtime.io)
            start_run(
                TaskRun(
                    task_id,
                    claim.attempts,
                    claim.input or {},
                    time.monotonic(),
                    priority,
                    parent_id=claim.parent_id,
                    running=running,
                )
            )
            self.runtime.running.add(running)
            task_id_var.set(task_id)
            return
        if claim.outcome is ClaimOutcome.EXHAUSTED:
            fail_poisoned(self.runtime, message, task_id, claim.attempts)
        elif claim.outcome is ClaimOutcome.MISSING:
            logger.warning("message %s names unknown task %s; dropped", message.message_id, task_id)
        else:
            logger.info("task %s is %s elsewhere or finished; duplicate delivery skipped", task_id, claim.state)
        raise SkipMessage(claim.outcome.value)

    def _claim(self, task_id: str, claim_args: dict[str, Any]) -> Claim | None:
        """The claim; ``None`` when the tenant's concurrency cap is reached."""
        return task_lifecycle.claim(self.runtime.sessions, task_id, **claim_args)

    def _spec(self, actor_name: str) -> WorkflowSpec:
        spec = spec_for_actor(self.runtime.catalogue, actor_name)
        assert spec is not None, actor_name  # interlock_task_id() said it is ours
        return spec

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
        result = run.outcome  # the workflow hands its value here, not to Dramatiq
        try:
            if exception is None and is_suspended(result):
                with self.runtime.sessions.begin() as session:
                    record_event(
                        session,
                        run.task_id,
                        kind="waiting",
                        state=TaskState.PROCESSING,
                        progress=-1,
                        step=None,
                        data={"reason": "waiting for child tasks"},
                    )
                return
            if exception is None:
                state, error, value = (
                    TaskState.SUCCESS,
                    None,
                    result if isinstance(result, dict) else {"value": result},
                )
            elif message.failed:
                if isinstance(exception, TaskCancelled):
                    message.failed = False  # a cancellation is acknowledged, never dead-lettered
                state = TaskState.CANCELLED if isinstance(exception, TaskCancelled) else TaskState.FAILURE
                error, value = describe_error(exception, limit=ERROR_CHARS), None
            else:
                log_outcome(self.runtime.catalogue, message, run, TaskState.RETRY)
                return  # a retry: recorded where it was parked (release_for_retry)
            ended, stopped = retry_transient(
                lambda: self._finish(run, state, value, error),
                within=WRITE_RETRY_SECONDS,
                what=f"finishing task {run.task_id}",
            )
            if ended is None and not stopped:
                logger.warning("task %s lost its lease before it finished; its outcome was discarded", run.task_id)
            else:
                log_outcome(self.runtime.catalogue, message, run, state if ended is not None else TaskState.CANCELLED)
        finally:
            # From here on its lease is renewed no more: had the write above failed, it lapses.
            if run.running is not None:
                self.runtime.running.discard(run.running)
            task_id_var.set(None)

    def _finish(
        self, run: TaskRun, state: TaskState, value: dict[str, Any] | None, error: str | None
    ) -> tuple[Transition | None, bool]:
        """Write the end of ``run``: (the transition, or ``None``; whether a cancelled run was released).

        Safe to run again after a commit that was cut off: finishing is fenced by the lease.
        """
        owner = self.runtime.owner

        def settle(session: Session, ended: Transition | None) -> bool:
            # A child's row and its parent's were locked together, in id order, before its end was
            # written (task_lifecycle.finish): no deadlock with siblings, a cancellation or a reclaim.
            if ended is not None:
                wake_parent(session, ended.parent_id)
                return False
            # Cancelled while it ran: the row already says CANCELLED; release the lease.
            return record_stopped(session, run.task_id, owner=owner)

        ended, stopped = task_lifecycle.finish(
            self.runtime.sessions,
            run.task_id,
            state=state,
            owner=owner,
            parent_id=run.parent_id,
            then=settle,
            result=value,
            error=error,
        )
        return ended, bool(stopped)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        run = current_run()
        if run is not None and run.running is not None:
            self.runtime.running.discard(run.running)
        task_id_var.set(None)


def release_for_retry(session: Session, message: Any, *, delay: int, owner: str) -> None:
    """In the transaction that parks a retry of the running task: release its lease, record RETRY.

    One transaction, so the retry can never find its own task still leased, and a retry is never
    recorded without its message (or parked while the task stays leased).
    """
    run = current_run()
    exception = getattr(message, "_exception", None)
    if run is None or exception is None or task_id_of(message) != run.task_id:
        return
    error = describe_error(exception, limit=ERROR_CHARS)
    if not mark_retrying(session, run.task_id, owner=owner, error=error, delay_ms=delay):
        # Cancelled while it ran: the parked retry will be skipped; release the lease now.
        record_stopped(session, run.task_id, owner=owner)
