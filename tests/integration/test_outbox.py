"""Submissions go through the outbox: accepted while RabbitMQ is down, published in confirmed
batches by a relay (or by the workers' maintenance), never lost and never run twice."""

from __future__ import annotations

import logging
import socket

import pytest
from dramatiq import Message
from sqlalchemy import func, select

from actors.middleware.maintenance import publish_due_messages
from actors.outbox_relay import publish_pending
from actors.publishers import PublishFailed, RabbitmqPublisher
from models.scheduled import ScheduledMessage
from models.tasks import TaskEvent
from tests.stack import Stack
from tests.support import parse_metrics, sample, wait_for_state, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

#: A broker URL on a closed loopback port: every connection attempt is refused.
UNREACHABLE = "amqp://guest:guest@127.0.0.1:1/"


def _outbox(stack: Stack) -> list[ScheduledMessage]:
    with stack.runtime.sessions() as session:
        return list(session.scalars(select(ScheduledMessage).order_by(ScheduledMessage.id)))


def _queued(stack: Stack, queue: str = "default") -> int:
    return int(stack.broker.get_queue_message_counts(queue)[0])


def _submit_offline(settings, make_stack, count: int, **body) -> tuple[Stack, list[str]]:  # type: ignore[no-untyped-def]
    offline = make_stack(settings.replace(broker_url=UNREACHABLE), worker=False)
    ids = []
    for n in range(count):
        answer = offline.client.simulate_post("/agent/execute", json={"query": f"offline {n}", **body})
        assert answer.status_code == 202, answer.text
        ids.append(answer.json["task_id"])
    return offline, ids


def test_submissions_are_accepted_while_rabbitmq_is_down_and_run_when_a_relay_reaches_it(
    settings, make_stack, fake_llm
) -> None:
    offline, ids = _submit_offline(settings, make_stack, 3)
    assert sorted(row.task_id for row in _outbox(offline)) == sorted(ids)
    ready = offline.client.simulate_get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json["checks"]["broker"].startswith("unreachable"), ready.json
    assert ready.json["outbox"]["pending"] == 3
    # A process that reaches RabbitMQ (here a worker and an API) publishes what the other committed.
    online = make_stack(settings)
    for task_id in ids:
        wait_for_state(online.runtime.sessions, task_id, "SUCCESS", timeout=60)
    wait_until(lambda: not _outbox(online), timeout=30, what="the outbox to drain")


def test_a_batch_the_broker_does_not_confirm_stays_in_the_outbox(settings, make_stack) -> None:
    offline, ids = _submit_offline(settings, make_stack, 2)
    offline.broker.outbox.stop()
    publisher = RabbitmqPublisher(offline.broker)
    with pytest.raises(PublishFailed):
        publish_pending(offline.runtime.sessions, publisher)
    assert sorted(row.task_id for row in _outbox(offline)) == sorted(ids)


def test_a_batch_waits_for_confirms_once(settings, make_stack) -> None:
    offline, ids = _submit_offline(settings, make_stack, 40, priority="high")
    stack = make_stack(settings, worker=False)
    stack.broker.outbox.stop()  # this test's publisher does the publishing
    stack.broker.flush_all()  # the module's vhost holds earlier tests' messages
    publisher = RabbitmqPublisher(stack.broker)
    try:
        assert publish_pending(stack.runtime.sessions, publisher, limit=500) == 40
    finally:
        publisher.close()
    assert publisher.counters.confirm_waits == 1
    assert publisher.counters.messages == 40
    assert _queued(stack) == 40
    assert _outbox(stack) == []


def _sever(publisher: RabbitmqPublisher) -> None:
    """The publisher's TCP connection dies under it, as when a broker restarts or a proxy drops an idle one."""
    assert publisher._connection is not None
    publisher._connection._impl._transport._sock.shutdown(socket.SHUT_RDWR)


def test_a_connection_lost_between_batches_is_replaced_without_failing_the_next(settings, make_stack) -> None:
    offline, ids = _submit_offline(settings, make_stack, 2)
    stack = make_stack(settings, worker=False)
    stack.broker.outbox.stop()  # this test's publisher does the publishing
    stack.broker.flush_all()
    publisher = RabbitmqPublisher(stack.broker)
    try:
        assert publish_pending(stack.runtime.sessions, publisher, limit=1) == 1
        _sever(publisher)
        assert publish_pending(stack.runtime.sessions, publisher, limit=1) == 1  # no PublishFailed
        _sever(publisher)
        assert publish_pending(stack.runtime.sessions, publisher) == 0  # idle: its keepalive finds it dead
        assert publisher._connection is None
    finally:
        publisher.close()
    assert _queued(stack) == 2
    assert _outbox(stack) == []


def test_messages_are_dramatiqs_own_bytes(settings, make_stack) -> None:
    """What the relay publishes is what Dramatiq's broker publishes: body, priority, persistence."""
    offline, (task_id,) = _submit_offline(settings, make_stack, 1, priority="high")
    (row,) = _outbox(offline)
    stack = make_stack(settings, worker=False)
    stack.broker.outbox.stop()
    stack.broker.flush_all()  # the module's vhost holds earlier tests' messages
    publisher = RabbitmqPublisher(stack.broker)
    try:
        publish_pending(stack.runtime.sessions, publisher)
    finally:
        publisher.close()
    method, properties, body = stack.broker.channel.basic_get("default", auto_ack=True)
    assert method is not None
    assert body == Message(**row.message).encode()
    assert properties.delivery_mode == 2
    assert properties.priority == 9
    assert Message.decode(body).args == (task_id,)


def test_the_api_publishes_each_message_once(settings, make_stack) -> None:
    stack = make_stack(settings, worker=False)
    stack.broker.flush_all()
    for n in range(20):
        stack.submit(query=f"once {n}")
    wait_until(lambda: not _outbox(stack), timeout=30, what="the outbox to drain")
    assert _queued(stack) == 20
    relay = stack.broker.outbox
    assert relay.counters.messages == 20
    assert relay.counters.confirm_waits <= 20
    metrics = parse_metrics(stack.client.simulate_get("/metrics").text)
    assert sample(metrics, "interlock_outbox_publish_delay_seconds_count") == 20
    assert sample(metrics, "interlock_outbox_pending") == 0


def test_maintenance_publishes_what_a_dead_process_left(settings, make_stack) -> None:
    offline, ids = _submit_offline(settings, make_stack, 2)
    stack = make_stack(settings.replace(outbox_fallback_seconds=0.2), worker=False)
    stack.broker.outbox.stop()  # no relay here: only the fallback publishes
    stack.broker.flush_all()  # the module's vhost holds earlier tests' messages
    published: list[int] = []

    def all_published() -> bool:
        published.append(publish_due_messages(stack.runtime, stack.broker))
        return sum(published) >= 2

    wait_until(all_published, timeout=30, what="the fallback to publish")
    assert sum(published) == 2
    assert _outbox(stack) == []
    assert _queued(stack) == 2


def test_maintenance_leaves_fresh_messages_to_their_relay(settings, make_stack) -> None:
    offline, _ = _submit_offline(settings, make_stack, 1)
    stack = make_stack(settings.replace(outbox_fallback_seconds=3600), worker=False)
    stack.broker.outbox.stop()
    stack.broker.flush_all()  # the module's vhost holds earlier tests' messages
    assert publish_due_messages(stack.runtime, stack.broker) == 0
    assert len(_outbox(stack)) == 1


def test_a_message_published_twice_runs_its_task_once(settings, make_stack, caplog) -> None:
    """A relay that dies between the confirms and its commit publishes its batch again later:
    the second delivery finds the task finished (the claim) and does nothing."""
    caplog.set_level(logging.INFO, logger="actors.middleware.claiming")
    settings = settings.replace(agent_modules="testkit.workflows", outbox_fallback_seconds=3600)
    stack = make_stack(settings)
    stack.broker.outbox.stop()  # the test publishes: neither the API's relay nor the worker's
    stack.worker_broker.outbox.stop()
    stack.broker.flush_all()  # the module's vhost holds earlier tests' messages
    offline, (task_id,) = _submit_offline(settings, make_stack, 1, workflow="bench_noop")
    (row,) = _outbox(offline)
    # The crash: published and confirmed, but the row was not deleted ...
    publisher = RabbitmqPublisher(stack.broker)
    try:
        publisher.publish([Message(**row.message)])
        wait_for_state(stack.runtime.sessions, task_id, "SUCCESS", timeout=30)
        # ... so it is published again.
        assert publish_pending(stack.runtime.sessions, publisher) == 1
    finally:
        publisher.close()
    wait_until(
        lambda: f"task {task_id} is SUCCESS elsewhere or finished; duplicate delivery skipped" in caplog.text,
        timeout=30,
        what="the duplicate delivery to be skipped",
    )
    task = wait_for_state(stack.runtime.sessions, task_id, "SUCCESS")
    assert task.attempts == 1
    with stack.runtime.sessions() as session:
        runs = session.scalar(
            select(func.count())
            .select_from(TaskEvent)
            .where(TaskEvent.task_id == task_id, TaskEvent.kind == "state", TaskEvent.state == "PROCESSING")
        )
    assert runs == 1
