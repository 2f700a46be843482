"""Builds the Dramatiq broker, its middleware and one actor per workflow, from settings.

RabbitMQ gets durable queues (Dramatiq's default), persistent messages, publisher confirms,
dead-letter queues (``<queue>.XQ``) and ``x-max-priority``; in quorum mode (for a cluster) every
queue is a replicated quorum queue and priorities go to band queues (``actors.priority_bands``).
Several ``;``-separated URLs are a cluster's nodes, tried in turn. Without a broker URL the in-process
stub broker serves ``interlock dev``. Either way, delayed messages (retry backoff) are parked in
the database and published when due instead of being held unacknowledged by a consumer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL, RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import xq_name
from dramatiq.middleware import Retries, ShutdownNotifications, TimeLimit
from dramatiq.middleware.time_limit import TimeLimitExceeded as DramatiqTimeLimitExceeded
from dramatiq.results import Results
from sqlalchemy.exc import DBAPIError

from actors.backends.results import DatabaseResultBackend
from actors.catalogue import WorkflowSpec
from actors.context import TaskContext
from actors.errors import PermanentError, Suspend, TransientError
from actors.events.bus import EventRouting
from actors.events.exchange import EventDelivery, RabbitmqEventRouting
from actors.events.subscriptions import subscriptions_in
from actors.messages import task_id_of
from actors.middleware.admission import Admission
from actors.middleware.claiming import Claiming, release_for_retry
from actors.middleware.current_run import CurrentRun, current_run
from actors.middleware.maintenance import Maintenance
from actors.middleware.metrics import WorkerMetrics
from actors.middleware.recycling import Recycling
from actors.middleware.start_gate import StartGating
from actors.middleware.tracing import Tracing
from actors.orchestration import SUSPENDED, try_suspend
from actors.outbox_relay import OutboxRelay, publisher_for
from actors.priority_bands import BANDS, band_name, routed, routes_bands, worker_priority
from actors.running import running_as
from actors.runtime import Runtime
from interlock.settings import Settings
from models.base import utcnow
from models.database import is_transient, retry_transient
from models.scheduled import schedule_message

__all__ = ["build_broker", "declare_workflow", "wait_for_broker", "InterlockRabbitmqBroker", "InterlockStubBroker"]

logger = logging.getLogger(__name__)

#: Seconds a delayed message's parking keeps trying through a database outage before the message
#: goes to RabbitMQ's delay queue instead.
PARK_RETRY_SECONDS = 5.0
#: Seconds after a task's hard limit at which Dramatiq's TimeLimit interrupts code that is still running.
TIME_LIMIT_GRACE = 1.0


class _ParksDelays:
    """Mixin: ``enqueue(message, delay=...)`` stores the message in the database until due; the
    process's outbox relay publishes those rows, and is stopped when the broker is closed."""

    runtime: Runtime | None = None
    outbox: OutboxRelay | None = None

    def close(self) -> None:
        if self.outbox is not None:
            self.outbox.stop()
        super().close()  # type: ignore[misc]

    def enqueue(self, message: Any, *, delay: int | None = None) -> Any:
        if delay is None or self.runtime is None:
            return super().enqueue(message, delay=None)  # type: ignore[misc]
        self.emit_before("enqueue", message, delay)  # type: ignore[attr-defined]
        runtime = self.runtime
        data = message.asdict()

        def park() -> None:
            with runtime.sessions.begin() as session:
                schedule_message(
                    session,
                    queue=message.queue_name,
                    message=data,
                    due_at=utcnow() + timedelta(milliseconds=delay),
                    task_id=task_id_of(message),
                )
                # A retry of the running task: its lease is released in the same transaction.
                release_for_retry(session, message, delay=delay, owner=runtime.owner)

        try:
            retry_transient(park, within=PARK_RETRY_SECONDS, what=f"parking message {message.message_id}")
        except DBAPIError as exc:
            if not is_transient(exc):
                raise
            # The database is away: Dramatiq's own delay queue holds the message instead of losing it.
            # A retry's task keeps its lease, unrenewed: it lapses, and the retry or a reclaim runs it.
            logger.warning("parking message %s failed; it waits in the broker's delay queue", message.message_id)
            return super().enqueue(message, delay=delay)  # type: ignore[misc]
        self.emit_after("enqueue", message, delay)  # type: ignore[attr-defined]
        return message


class _QueueTypes:
    """Mixin: the queues' arguments by queue type, and band routing in quorum mode.

    Classic queues keep Dramatiq's arguments (``x-max-priority`` among them). Quorum queues are
    replicated on the cluster's nodes and dead-letter at least once; they carry
    ``x-delivery-limit`` (``delivery_limit``, twice the tasks' own limit so Claiming's poison
    handling decides first; past it RabbitMQ dead-letters a message a crashing consumer keeps
    returning) and no ``x-max-priority``, which they ignore. The dead-letter queue gets no
    delivery limit: listing dead letters puts them back, and RabbitMQ 3.x counts that as a
    delivery, so a limit there would drop them.
    """

    queue_type: str = "classic"
    delivery_limit: int = 10

    def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
        """Dramatiq's arguments of a work queue and of its delay queue, by queue type."""
        arguments: dict[str, Any] = super()._build_queue_arguments(queue_name)  # type: ignore[misc]
        if self.queue_type == "quorum":
            arguments.pop("x-max-priority", None)
            arguments.update(
                {
                    "x-queue-type": "quorum",
                    "x-delivery-limit": self.delivery_limit,
                    # A dead letter is kept until the dead-letter queue has it, even across a
                    # leader's loss (RabbitMQ's default for quorum queues is at most once).
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                }
            )
        return arguments

    def _declare_xq_queue(self, queue_name: str) -> Any:
        if self.queue_type != "quorum":
            return super()._declare_xq_queue(queue_name)  # type: ignore[misc]
        arguments = {"x-queue-type": "quorum", "x-message-ttl": DEAD_MESSAGE_TTL}
        return self.channel.queue_declare(queue=xq_name(queue_name), durable=True, arguments=arguments)  # type: ignore[attr-defined]

    def enqueue(self, message: Any, *, delay: int | None = None) -> Any:
        if self.queue_type == "quorum":
            message = routed(message)
        return super().enqueue(message, delay=delay)  # type: ignore[misc]


class InterlockRabbitmqBroker(_ParksDelays, RabbitmqEventRouting, _QueueTypes, RabbitmqBroker):
    pass


class InterlockStubBroker(_ParksDelays, EventRouting, StubBroker):
    pass


def build_broker(settings: Settings, runtime: Runtime, catalogue: Mapping[str, WorkflowSpec]) -> dramatiq.Broker:
    """The broker for this process, with every workflow declared as an actor on its queue."""
    # Dramatiq runs ``before_*`` hooks in this order and ``after_*`` hooks in reverse order.
    # Before a task runs: EventDelivery makes sure an event's task row exists; Recycling hands the
    # message back if this process is being recycled, before Admission spends a rate-limit slot
    # on it; Claiming then takes the lease (the tenant's cap and poison messages are decided there).
    # After it ran: WorkerMetrics and Claiming come before Retries in the list so that their after
    # hooks see Retries' verdict (message.failed or a retry enqueued); Recycling counts the run
    # after Claiming wrote it, and CurrentRun, first in the list, ends the thread's run last.
    # TimeLimit comes last: it arms after the claim and disarms first, before any after hook
    # writes. It is the backstop for code that neither waits on a call nor reaches a step boundary
    # (where the task's own limits stop it, see actors.running), so it fires TIME_LIMIT_GRACE late:
    # its exception, raised into the thread, never races a task that is already ending on time.
    middleware = [
        StartGating(runtime),  # first: a task waits at the gate before any hook runs for it
        EventDelivery(runtime),
        CurrentRun(),
        Recycling(runtime),
        Admission(runtime),
        Tracing(runtime),  # its span covers the claim and, its after hooks following Claiming's, the end
        Claiming(runtime),
        WorkerMetrics(runtime),  # after hooks run after Retries' and before Claiming's
        Maintenance(runtime),
        ShutdownNotifications(),
        Retries(
            max_retries=settings.max_retries,
            min_backoff=int(settings.min_backoff * 1000),
            max_backoff=int(settings.max_backoff * 1000),
        ),
        Results(backend=DatabaseResultBackend(runtime.sessions), result_ttl=int(settings.result_ttl * 1000)),
        TimeLimit(time_limit=settings.time_limit * 1000),
    ]
    broker: InterlockRabbitmqBroker | InterlockStubBroker
    if settings.uses_rabbitmq:
        broker = InterlockRabbitmqBroker(
            url=settings.broker_url,
            confirm_delivery=True,
            max_priority=settings.queue_max_priority,
            middleware=middleware,
        )
        broker.queue_type = settings.queue_type
        broker.delivery_limit = 2 * settings.max_deliveries
    elif settings.broker_url:
        raise ValueError("INTERLOCK_BROKER_URL must be an amqp:// or amqps:// URL, or empty")
    else:
        broker = InterlockStubBroker(middleware=middleware)
    broker.runtime = runtime
    broker.outbox = OutboxRelay(
        runtime.sessions,
        publisher_for(broker),
        poll_interval=settings.outbox_poll_interval,
        batch_size=settings.outbox_batch_size,
    )
    runtime.catalogue = dict(catalogue)
    broker.subscriptions = subscriptions_in(catalogue)
    for spec in catalogue.values():
        declare_workflow(broker, spec, runtime)
    return broker


def declare_workflow(broker: dramatiq.Broker, spec: WorkflowSpec, runtime: Runtime) -> dramatiq.Actor[Any, Any]:
    settings = runtime.settings
    time_limit, _ = spec.limits(settings)

    def run(task_id: str) -> None:
        """Run the workflow; its outcome goes to Claiming through the task run, not to Dramatiq.

        Dramatiq's result middleware serves plain actors; handed a workflow's value, it (or the
        worker) would log on every task that the value was discarded.
        """
        task_run = current_run()
        if task_run is None or task_run.task_id != task_id or task_run.running is None:
            raise PermanentError(f"task {task_id} was not claimed by this worker")
        running = task_run.running
        ctx = TaskContext(
            task_id=task_id,
            input=task_run.input,
            attempt=task_run.attempt,
            runtime=runtime,
            soft_deadline=running.soft_deadline,
            priority=task_run.priority,
            broker=broker,
            usage=task_run.usage,
            running=running,
        )
        earlier = ctx.earlier_body()
        if earlier is not None:
            # Its body returned in an earlier run whose worker died before the task's end was
            # written: finish it with that value, without running the body (and its effects) again.
            logger.warning("task %s: its body returned in attempt %d; finishing it", task_id, earlier.attempt)
            task_run.outcome = earlier.result
            return
        with running_as(running):
            while True:
                try:
                    task_run.outcome = spec.fn(ctx)
                    ctx.record_body(task_run.outcome)
                    return
                except Suspend:
                    # Children are running: sleep unless one ended during this run (then replay now).
                    with runtime.sessions.begin() as session:
                        if try_suspend(session, task_id, owner=runtime.owner):
                            task_run.outcome = SUSPENDED
                            return
                    ctx.forget_cached_steps()
                except TransientError as exc:
                    if exc.retry_after is None:
                        raise
                    # Dramatiq's Retry carries the delay the server asked for (Retry-After).
                    raise dramatiq.Retry(str(exc), delay=max(int(exc.retry_after * 1000), 1)) from exc
                except DramatiqTimeLimitExceeded as exc:
                    # Dramatiq's backstop interrupted code that computed past the limit.
                    raise running.time_limit_exceeded() from exc

    run.__name__ = spec.name
    options = {
        "max_retries": settings.max_retries if spec.max_retries is None else spec.max_retries,
        "time_limit": int((time_limit + TIME_LIMIT_GRACE) * 1000),
        # Not retried: bad input, refusals, cancellation and the hard time limit (errors.TimeLimitExceeded).
        "throws": (PermanentError, DramatiqTimeLimitExceeded),
        # The result is the task's (tasks.result); the result backend serves plain actors.
        "store_results": False,
    }
    # A renamed workflow also answers to its former names, so messages queued (or parked, or
    # dead-lettered and requeued) before an upgrade still find an actor; new ones use the new name.
    actors = [
        dramatiq.Actor(run, broker=broker, actor_name=name, queue_name=spec.queue, priority=0, options=dict(options))
        for name in spec.actor_names
    ]
    if routes_bands(broker):
        # Quorum queues have no priorities: a twin actor per band, the high one run first.
        for band in BANDS:
            for name in spec.actor_names:
                dramatiq.Actor(
                    run,
                    broker=broker,
                    actor_name=band_name(name, band),
                    queue_name=band_name(spec.queue, band),
                    priority=worker_priority(band),
                    options=dict(options),
                )
    return actors[0]


def wait_for_broker(broker: dramatiq.Broker, *, timeout: float = 30.0) -> None:
    """Block until the broker answers (RabbitMQ may still be starting)."""
    if not isinstance(broker, RabbitmqBroker):
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            broker.connection  # noqa: B018 - opens this thread's connection
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise ConnectionError("RabbitMQ is not reachable") from exc
            time.sleep(0.5)
