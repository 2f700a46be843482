"""The reference article's Celery setup (its celeryconfig.py), on RabbitMQ, results in PostgreSQL.

Configured from BENCH_BROKER_URL, BENCH_DATABASE_URL and BENCH_LLM_URL. The agent task is the
article's ``execute_agent_workflow`` with its ``update_state`` calls and two LLM calls; its
simulated ``time.sleep(2)`` tool step is left out, as issue 6 asks for two LLM calls only.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import psycopg
from celery import Celery
from kombu import Exchange, Queue

_db = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

app = Celery("bench_celery", broker=os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/"))
app.conf.update(
    result_backend="db+" + _db.replace("postgresql://", "postgresql+psycopg://", 1),
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    timezone="UTC",
    enable_utc=True,
    worker_prefetch_multiplier=4,
    worker_max_tasks_per_child=1000,
    task_default_queue="default",
    task_queues=(
        Queue("default", Exchange("default"), routing_key="default"),
        Queue("high_priority", Exchange("high_priority"), routing_key="high_priority"),
        Queue("low_priority", Exchange("low_priority"), routing_key="low_priority"),
    ),
    task_routes={"bench.mark_high": {"queue": "high_priority"}},
    result_expires=3600,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
)

_local = threading.local()


def _mark(task_id: str, kind: str) -> None:
    connection = getattr(_local, "pg", None)
    if connection is None:
        connection = _local.pg = psycopg.connect(_db, autocommit=True)
    connection.execute("INSERT INTO bench_runs (task_id, system, kind) VALUES (%s, 'celery', %s)", (task_id, kind))


@app.task(name="bench.noop")
def noop() -> dict[str, Any]:
    return {"status": "success"}


@app.task(name="bench.work", bind=True)
def work(self: Any, seconds: float) -> dict[str, Any]:
    _mark(self.request.id, "start")
    time.sleep(seconds)
    _mark(self.request.id, "done")
    return {"status": "success"}


@app.task(name="bench.mark_high", bind=True)
def mark_high(self: Any) -> dict[str, Any]:
    _mark(self.request.id, "start")
    return {"status": "success"}


def _client() -> Any:
    client = getattr(_local, "openai", None)
    if client is None:
        from openai import OpenAI

        client = _local.openai = OpenAI(base_url=os.environ["BENCH_LLM_URL"], api_key="sk-bench-not-a-real-key")
    return client


@app.task(bind=True, max_retries=3, name="bench.execute_agent_workflow")
def execute_agent_workflow(self: Any, query: str, context: dict[str, Any]) -> dict[str, Any]:
    """The article's agent, as written there (minus the simulated 2 s tool sleep)."""
    client = _client()
    self.update_state(state="PROCESSING", meta={"step": "initializing", "progress": 10})
    self.update_state(state="PROCESSING", meta={"step": "reasoning", "progress": 25})
    reasoning = client.chat.completions.create(
        model="gpt-4",
        messages=[
            {"role": "system", "content": "You are a helpful research agent."},
            {"role": "user", "content": f"Analyze this query: {query}"},
        ],
        timeout=60,
    )
    self.update_state(state="PROCESSING", meta={"step": "tool_execution", "progress": 50})
    tool_results = {"data": "scraped content"}
    self.update_state(state="PROCESSING", meta={"step": "synthesis", "progress": 75})
    final = client.chat.completions.create(
        model="gpt-4",
        messages=[
            {"role": "system", "content": "Synthesize the findings."},
            {"role": "user", "content": f"Results: {tool_results}"},
        ],
        timeout=60,
    )
    self.update_state(state="SUCCESS", meta={"step": "complete", "progress": 100})
    return {
        "status": "success",
        "result": final.choices[0].message.content,
        "metadata": {"reasoning": reasoning.choices[0].message.content, "tools_used": ["web_search", "scraper"]},
    }


def create_result_tables() -> None:
    """Celery's database backend creates its tables lazily; do it once, before workers race to."""
    from celery.backends.database.models import ResultModelBase

    backend = app.backend
    session = backend.ResultSession()
    try:
        ResultModelBase.metadata.create_all(session.get_bind())
    finally:
        session.close()
