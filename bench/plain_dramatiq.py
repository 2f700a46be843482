"""Plain Dramatiq on RabbitMQ with its default middleware and none of Interlock's: the ceiling.

``noop`` counts completions in memory and a thread flushes the count to ``bench_counts`` every
0.1 s (the final state is not durable: the ceiling). ``noop_durable`` inserts one row per task.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import dramatiq
import psycopg
from dramatiq.brokers.rabbitmq import RabbitmqBroker

_db = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
broker = RabbitmqBroker(url=os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/"))
dramatiq.set_broker(broker)

_local = threading.local()
_lock = threading.Lock()
_count = 0
_flusher: threading.Thread | None = None


def _pg() -> Any:
    connection = getattr(_local, "pg", None)
    if connection is None:
        connection = _local.pg = psycopg.connect(_db, autocommit=True)
    return connection


def _flush_forever() -> None:
    connection = psycopg.connect(_db, autocommit=True)
    last = -1
    while True:
        time.sleep(0.1)
        if _count != last:
            last = _count
            connection.execute(
                "INSERT INTO bench_counts (pid, n) VALUES (%s, %s) ON CONFLICT (pid) DO UPDATE SET n = excluded.n",
                (os.getpid(), last),
            )


@dramatiq.actor(queue_name="default", max_retries=3)
def noop() -> None:
    global _count, _flusher
    with _lock:
        _count += 1
        if _flusher is None:
            _flusher = threading.Thread(target=_flush_forever, daemon=True)
            _flusher.start()


@dramatiq.actor(queue_name="default", max_retries=3)
def noop_durable(task_id: str) -> None:
    _pg().execute("INSERT INTO bench_runs (task_id, system, kind) VALUES (%s, 'dramatiq', 'done')", (task_id,))


@dramatiq.actor(queue_name="default", max_retries=3)
def agent(task_id: str, query: str) -> None:
    """Two LLM calls, then one row: the same I/O as the agent workflows of the other systems."""
    client = getattr(_local, "openai", None)
    if client is None:
        from openai import OpenAI

        client = _local.openai = OpenAI(base_url=os.environ["BENCH_LLM_URL"], api_key="sk-bench-not-a-real-key")
    for system in ("You are a helpful research agent.", "Synthesize the findings."):
        client.chat.completions.create(
            model="gpt-4",
            messages=[{"role": "system", "content": system}, {"role": "user", "content": query}],
            timeout=60,
        )
    _pg().execute("INSERT INTO bench_runs (task_id, system, kind) VALUES (%s, 'dramatiq', 'done')", (task_id,))
