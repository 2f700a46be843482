"""Plain Dramatiq actors share the broker: their results go through Dramatiq's API to PostgreSQL."""

from __future__ import annotations

import dramatiq
import pytest
from dramatiq.results import Results

from actors.broker import build_broker
from actors.catalogue import load_catalogue
from actors.runtime import Runtime

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


def test_message_get_result_works_on_the_postgres_backend(settings) -> None:
    runtime = Runtime.open(settings)
    broker = build_broker(settings, runtime, load_catalogue(settings))
    backend = next(m for m in broker.middleware if isinstance(m, Results)).backend

    def add(x: int, y: int) -> int:
        return x + y

    actor = dramatiq.Actor(
        add,
        broker=broker,
        actor_name="test_plain_add",
        queue_name="plain",
        priority=0,
        options={"store_results": True, "max_retries": 0},
    )
    worker = dramatiq.Worker(broker, queues={"plain"}, worker_threads=2)
    worker.start()
    try:
        messages = [actor.send(n, 10) for n in range(5)]
        results = [m.get_result(backend=backend, block=True, timeout=20_000) for m in messages]
        assert results == [10, 11, 12, 13, 14]
    finally:
        worker.stop()
        broker.close()
        runtime.close()
