"""Dramatiq middleware that keeps each task's durable state and lease in the database.

Every transition (PENDING → PROCESSING → RETRY → SUCCESS / FAILURE) is written by whichever
worker process handles the message, so status is right on any host. A task is run only by the
worker that holds its lease: a redelivered duplicate (RabbitMQ's ``consumer_timeout``, a crash)
is skipped while the lease is alive, and a task that keeps killing its worker is dead-lettered
after ``max_deliveries`` starts.

A claimed task is in the process's registry of running tasks (``Runtime.running``) until its
outcome is written, and only those leases are renewed. The writes that start, retry and end a
task are tried again through a short database outage; if one still fails, the lease is simply no
longer renewed, so it lapses and another worker takes the task up: never leased for good.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from actors.cancellation import record_stopped
from actors.catalogue import WorkflowSpec, spec_for_actor
from actors.errors import TaskCancelled, describe_error
from actors.limits import SlidingWindow
from actors.messages import task_id_of
from actors.middleware.task_log import log_outcome
from actors.orchestration import is_suspended, wake_parent
from actors.running import RunningTask
from actors.runtime import Runtime
from interlock.limits import parse_limits
from interlock.logs import task_id_var
from models.database import autocommit, is_transient, retry_transient, writes_in_one_statement
from models.tasks import (
    Claim,
    ClaimOutcome,
    TaskState,
    Transition,
    claim_task,
    claim_task_at_once,
    finish_task,
    finish_task_at_once,
    mark_retrying,
    record_event,
)
from models.tenants import may_start

__all__ = ["TaskTracking", "TaskRun", "current_run", "release_for_retry"]

logger = logging.getLogger(__name__)

#: Seconds the writes that claim, retry or end a task keep trying through deadlocks and a database
#: restart; past that a claimed task's lease lapses and another worker takes it up.
WRITE_RETRY_SECONDS = 15.0
#: Milliseconds (1 to 2 times this) before a message whose claim could not be written comes back.
HAND_BACK_MS = 1000

#: How much of a task's error its row and history keep.
ERROR_CHARS = 4000

#: How long a task over its tenant's concurrency cap waits before it asks again (1 to 2 times this).
TENANT_WAIT_MS = 500

_local = threading.local()


@dataclass
class TaskRun:
    task_id: str
    attempt: int
    input: dict[str, Any]
    started: float
    priority: int = 0
    #: The coordinating task that spawned this one, woken when it ends.
    parent_id: str | None = None
    #: What the workflow returned (``SUSPENDED`` while it waits for children).
    outcome: Any = None
    #: The run's LLM token usage (the TaskContext adds to it), for metrics.
    usage: dict[str, int] = field(default_factory=dict)
    #: Its deadlines and cancellation, in the process's registry while it runs.
    running: RunningTask | None = None


def current_run() -> TaskRun | None:
    """The task the calling worker thread is running, if any."""
    return getattr(_local, "run", None)


class TaskTracking(Middleware):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.processed = 0
        self.max_tasks = runtime.settings.max_tasks_per_child
        self.limits = parse_limits(runtime.settings.rate_limits)
        self.window = SlidingWindow(runtime.sessions)
        #: PostgreSQL: claim and finish in one statement each (one round trip).
        self.one_statement = writes_in_one_statement(runtime.sessions)
        self.rate_limited = 0
        #: Set when this process has done its ``max_tasks`` and should be recycled.
        self.exhausted = threading.Event()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        task_id = task_id_of(message)
        if task_id is None or not self._tracks(message.actor_name):
            return  # a plain Dramatiq actor on the same broker: not an Interlock task
        if self.exhausted.is_set():
            # This process is being recycled: hand the message back to the queue for another.
            broker.enqueue(message.copy())
            raise dramatiq.middleware.SkipMessage("worker process is being recycled")
        settings = self.runtime.settings
        try:
            claim = self._admit_and_claim(broker, message, task_id)
        except DBAPIError as exc:
            if not is_transient(exc):
                raise
            # The database stays away. Not the task's failure (no retry is spent on it): the same
            # message comes back later, parked, or in RabbitMQ's delay queue while the database is away.
            delay = int(HAND_BACK_MS * random.uniform(1, 2))
            logger.warning("could not claim task %s (%s); its message comes back in %d ms", task_id, exc.orig, delay)
            broker.enqueue(message.copy(), delay=delay)
            raise dramatiq.middleware.SkipMessage("database unavailable") from exc
        if claim.outcome is ClaimOutcome.CLAIMED:
            priority = int(message.options.get("broker_priority") or 0)
            hard, soft = self._spec(message.actor_name).limits(settings)
            running = RunningTask.starting_now(task_id, time_limit=hard, soft_time_limit=soft, io=self.runtime.io)
            _local.run = TaskRun(
                task_id,
                claim.attempts,
                claim.input or {},
                time.monotonic(),
                priority,
                parent_id=claim.parent_id,
                running=running,
            )
            self.runtime.running.add(running)
            task_id_var.set(task_id)
            return
        if claim.outcome is ClaimOutcome.EXHAUSTED:
            error = (
                f"task started {claim.attempts - 1} times without finishing (worker crashes or "
                f"redeliveries); INTERLOCK_MAX_DELIVERIES={settings.max_deliveries}. Dead-lettered."
            )
            logger.error("poison message for task %s: %s", task_id, error)
            with self.runtime.sessions.begin() as session:
                ended = finish_task(session, task_id, state=TaskState.FAILURE, owner=self.runtime.owner, error=error)
                wake_parent(session, ended.parent_id if ended else None)
            message.fail()
        elif claim.outcome is ClaimOutcome.MISSING:
            logger.warning("message %s names unknown task %s; dropped", message.message_id, task_id)
        else:
            logger.info("task %s is %s elsewhere or finished; duplicate delivery skipped", task_id, claim.state)
        raise dramatiq.middleware.SkipMessage(claim.outcome.value)

    def _admit_and_claim(self, broker: dramatiq.Broker, message: Any, task_id: str) -> Claim:
        """The rate limit's admission and the claim; a message that must wait is parked and skipped."""
        settings = self.runtime.settings
        limit = self.limits.get(message.queue_name)
        if limit is not None:
            admitted, wait, admitted_at = self.window.acquire(f"agent:{message.queue_name}", limit)
            if not admitted:
                # Not a failure and not a retry: the same message waits (parked) and comes back.
                delay = int((wait + random.uniform(0, limit.period / limit.count)) * 1000)
                logger.debug("task %s rate limited on %s; back in %d ms", task_id, message.queue_name, delay)
                self.rate_limited += 1
                from actors.middleware.metrics import RATE_LIMIT_WAITS

                RATE_LIMIT_WAITS.labels(message.queue_name).inc()
                broker.enqueue(message.copy(), delay=delay)
                raise dramatiq.middleware.SkipMessage("rate limited")
            _local.admitted_at = admitted_at
        claim_args: dict[str, Any] = {
            "owner": self.runtime.owner,
            "lease_seconds": settings.lease_seconds,
            # Retries are starts too; the cap is on the starts beyond them (crash redeliveries).
            "max_deliveries": settings.max_deliveries + int(message.options.get("retries") or 0),
            "admitted_at": getattr(_local, "admitted_at", None) if limit is not None else None,
        }
        # A claim whose commit was cut off may have taken the lease: the second try then finds it
        # held and skips the message, and the lease, renewed by no one, lapses.
        claim = retry_transient(
            lambda: self._claim(task_id, claim_args), within=WRITE_RETRY_SECONDS, what=f"claiming task {task_id}"
        )
        if claim is None:
            # The tenant's concurrency cap is reached: the message waits its turn (parked, not failed).
            delay = int(TENANT_WAIT_MS * random.uniform(1, 2))
            logger.debug("task %s waits for its tenant's concurrency cap; back in %d ms", task_id, delay)
            broker.enqueue(message.copy(), delay=delay)
            raise dramatiq.middleware.SkipMessage("tenant concurrency cap")
        return claim

    def _claim(self, task_id: str, claim_args: dict[str, Any]) -> Claim | None:
        """The claim, in one statement when it can be; ``None`` when the tenant's concurrency cap is reached."""
        if self.one_statement:
            with autocommit(self.runtime.sessions) as connection:
                claim = claim_task_at_once(connection, task_id, **claim_args)
            if claim is not None:
                return claim
        # A capped tenant, a duplicate delivery, or not PostgreSQL: decide in a transaction.
        with self.runtime.sessions.begin() as session:
            return claim_task(session, task_id, **claim_args) if may_start(session, task_id) else None

    def _tracks(self, actor_name: str) -> bool:
        return spec_for_actor(self.runtime.catalogue, actor_name) is not None

    def _spec(self, actor_name: str) -> WorkflowSpec:
        spec = spec_for_actor(self.runtime.catalogue, actor_name)
        assert spec is not None, actor_name  # _tracks() said it is ours
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
        _local.run = None
        result = run.outcome  # the workflow hands its value here, not to Dramatiq
        self.processed += 1
        if self.max_tasks and self.processed >= self.max_tasks:
            self.exhausted.set()
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
        if self.one_statement and run.parent_id is None:
            with autocommit(self.runtime.sessions) as connection:
                ended = finish_task_at_once(
                    connection, run.task_id, state=state, owner=owner, result=value, error=error
                )
            if ended is not None:
                return ended, False
        # A child's row and its parent's are locked in one transaction, so siblings, the parent
        # and lease reclaims can deadlock; PostgreSQL aborts one and retry_transient runs it again.
        with self.runtime.sessions.begin() as session:
            ended = finish_task(session, run.task_id, state=state, owner=owner, result=value, error=error)
            if ended is not None:
                wake_parent(session, ended.parent_id)
                return ended, False
            # Cancelled while it ran: the row already says CANCELLED; release the lease.
            return None, record_stopped(session, run.task_id, owner=owner)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        run = current_run()
        if run is not None and run.running is not None:
            self.runtime.running.discard(run.running)
        _local.run = None
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
