"""Quorum mode on the machine's RabbitMQ (a vhost of this module's own): the queues, priorities
served high first through the band queues, and dead-lettering (ours and RabbitMQ's delivery limit)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import dramatiq
import pika
import pika.exceptions
import pytest
import requests
from sqlalchemy import select

from actors.broker import build_broker
from actors.catalogue import load_catalogue
from actors.dead_letters import list_dead_letters
from actors.priority_bands import with_bands
from actors.queues import queue_depths
from actors.runtime import Runtime
from interlock.settings import Settings
from models.tasks import TaskEvent
from tests.services import MANAGEMENT_URL
from tests.stack import MakeStack
from tests.support import wait_for_state, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


@pytest.fixture
def quorum(settings: Settings) -> Settings:
    """Quorum mode on this module's vhost, its queues emptied of an earlier test's messages."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    try:
        for queue in with_bands(["default"]):
            for physical in (queue, f"{queue}.DQ", f"{queue}.XQ"):
                channel = connection.channel()
                with contextlib.suppress(pika.exceptions.ChannelClosedByBroker):  # not declared yet
                    channel.queue_purge(physical)
    finally:
        connection.close()
    return settings.replace(queue_type="quorum", agent_modules="tests.workflows", max_deliveries=2)


def _count(settings: Settings, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def _queues(broker_url: str) -> dict[str, dict[str, Any]]:
    vhost = unquote(urlsplit(broker_url).path.lstrip("/")) or "/"
    response = requests.get(f"{MANAGEMENT_URL}/queues/{quote(vhost, safe='')}", auth=("guest", "guest"), timeout=10)
    response.raise_for_status()
    return {queue["name"]: queue for queue in response.json()}


def test_every_queue_is_a_quorum_queue_with_a_delivery_limit(quorum: Settings, make_stack: MakeStack) -> None:
    stack = make_stack(quorum, worker=False)
    task_id = stack.submit(query="declare", workflow="test_echo", priority="high")
    wait_until(lambda: queue_depths(stack.broker, ["default"])[0]["ready"] == 1, timeout=20, what="the message")
    for queue in stack.broker.get_declared_queues():  # what a worker declares when it starts consuming
        stack.broker.declare_queue(queue, ensure=True)
    queues = _queues(quorum.broker_url)
    for name in ("default", "default.high", "default.low"):
        for physical in (name, f"{name}.DQ"):
            assert queues[physical]["type"] == "quorum", physical
            assert queues[physical]["arguments"]["x-delivery-limit"] == 4, physical
            assert "x-max-priority" not in queues[physical]["arguments"]
        assert queues[f"{name}.XQ"]["type"] == "quorum"
    # The high task waits in the high band, not in the canonical queue.
    assert (_count(quorum, "default.high"), _count(quorum, "default")) == (1, 0)
    assert task_id


@pytest.fixture
def one_thread_worker(quorum: Settings) -> Iterator[Any]:
    """A worker like ``start_worker``'s, with one thread that holds many messages (as a worker with
    the default 256 slots does), so the order it runs them in is the bands' order."""
    runtime = Runtime.open(quorum)
    broker = build_broker(quorum, runtime, load_catalogue(quorum))
    broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, worker_threads=1)
    worker.queue_prefetch = 32
    yield worker
    worker.stop()
    broker.close()
    runtime.close()


def test_high_priority_runs_first(quorum: Settings, make_stack: MakeStack, one_thread_worker: Any) -> None:
    stack = make_stack(quorum, worker=False)
    submitted = {
        band: [stack.submit(query=f"{band} {n}", workflow="test_echo", priority=band) for n in range(5)]
        for band in ("low", "normal", "high")  # the worst order: low first
    }
    wait_until(lambda: queue_depths(stack.broker, ["default"])[0]["ready"] == 15, timeout=20, what="15 messages")
    one_thread_worker.start()
    every = [task_id for ids in submitted.values() for task_id in ids]
    for task_id in every:
        wait_for_state(stack.runtime.sessions, task_id, "SUCCESS", timeout=60)
    with stack.runtime.sessions() as session:
        starts = session.scalars(
            select(TaskEvent.task_id)
            .where(TaskEvent.task_id.in_(every), TaskEvent.kind == "state", TaskEvent.state == "PROCESSING")
            .order_by(TaskEvent.id)
        ).all()
    band_of = {task_id: band for band, ids in submitted.items() for task_id in ids}
    order = [band_of[task_id] for task_id in starts]
    # The first message delivered may run before the others arrive; after it, band by band.
    rest = order[1:]
    assert rest == sorted(rest, key=["high", "normal", "low"].index), order


def test_dead_letters_of_every_band_are_listed(quorum: Settings, make_stack: MakeStack) -> None:
    stack = make_stack(quorum)
    failed = {p: stack.submit(query=p, workflow="test_fail", priority=p) for p in ("high", "normal", "low")}
    for task_id in failed.values():
        wait_for_state(stack.runtime.sessions, task_id, "FAILURE", timeout=30)
    wait_until(
        lambda: queue_depths(stack.broker, ["default"])[0]["dead_letters"] == 3, timeout=20, what="3 dead letters"
    )
    letters = list_dead_letters(stack.broker, ["default"])["default"]
    assert {letter.task_id for letter in letters} == set(failed.values())


def test_rabbitmq_dead_letters_past_the_delivery_limit(quorum: Settings, make_stack: MakeStack) -> None:
    # A consumer that keeps handing a message back (a crash loop our middleware never sees):
    # past 2 x INTERLOCK_MAX_DELIVERIES deliveries RabbitMQ moves it to the dead-letter queue.
    stack = make_stack(quorum, worker=False)
    stack.broker.declare_queue("default", ensure=True)
    connection = pika.BlockingConnection(pika.URLParameters(quorum.broker_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()  # a quorum queue has the message once the publish is confirmed
        channel.basic_publish("", "default.low", b"{}", pika.BasicProperties(delivery_mode=2))
        deliveries = 0
        while True:
            method, _, _ = channel.basic_get("default.low", auto_ack=False)
            if method is None:
                break
            deliveries += 1
            channel.basic_nack(method.delivery_tag, requeue=True)
            assert deliveries <= 10
        assert deliveries == 2 * quorum.max_deliveries + 1
        # RabbitMQ dead-letters asynchronously, a moment after the last nack.
        wait_until(lambda: _count(quorum, "default.low.XQ") == 1, timeout=10, what="the message in default.low.XQ")
    finally:
        connection.close()
