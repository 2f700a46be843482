"""Helpers shared by the test suites: reading tasks, events, LLM calls, SSE frames and Prometheus
samples, and waiting for them with a deadline (``wait_until`` and ``free_port`` come from
``testkit``, which the benchmarks use too)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from interlock.settings import Settings
from models.migrations import upgrade
from models.tasks import Task, TaskEvent
from testkit.processes import free_port
from testkit.waiting import wait_until

__all__ = [
    "DATABASES",
    "blocked_backend",
    "events",
    "free_port",
    "get_task",
    "json_of",
    "kill_while_blocked",
    "llm_calls",
    "marks",
    "parse_sse",
    "parse_metrics",
    "sample",
    "settings_for_database",
    "stage_calls",
    "wait_for_state",
    "wait_until",
]


def get_task(sessions: sessionmaker[Session], task_id: str) -> Task | None:
    with sessions() as session:
        return session.get(Task, task_id)


def wait_for_state(
    sessions: sessionmaker[Session], task_id: str, states: set[str] | str, *, timeout: float = 30.0
) -> Task:
    wanted = {states} if isinstance(states, str) else states

    def done() -> Task | None:
        task = get_task(sessions, task_id)
        return task if task is not None and task.state in wanted else None

    return wait_until(done, timeout=timeout, what=f"task {task_id} to reach {sorted(wanted)}")


def events(sessions: sessionmaker[Session], task_id: str) -> list[TaskEvent]:
    with sessions() as session:
        return list(session.scalars(select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(TaskEvent.id)))


def json_of(response: Any) -> Any:
    return response.json


def llm_calls(fake_llm: Any, prefix: str, *, status: int | None = 200) -> int:
    """LLM requests whose user message starts with ``prefix`` (answers echo prompts, so no substring)."""
    return sum(
        1
        for r in list(fake_llm.requests)
        if (status is None or r["status"] == status) and r["body"]["messages"][-1]["content"].startswith(prefix)
    )


def stage_calls(fake_llm: Any, stage: str, query: str, *, status: int | None = 200) -> int:
    """LLM requests made by one stage of one checkpointed workflow (the user message starts with its tag)."""
    return llm_calls(fake_llm, f"[stage:{stage}] Query: {query}\n", status=status)


def parse_sse(text: str) -> list[dict[str, Any]]:
    """Frames of an SSE body: ``{"id", "event", "data"}``; comments and ``retry:`` are dropped."""
    frames = []
    for block in text.split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        if "id" in fields:
            frames.append({"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])})
    return frames


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``{(sample name, labels): value}`` of a Prometheus text exposition, parsed as Prometheus would."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(parsed: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """One sample of ``parse_metrics``'s result; 0 when it is absent (as Prometheus counts it)."""
    return parsed.get((name, frozenset(labels.items())), 0.0)


#: ``@pytest.fixture(params=DATABASES)`` with ``settings_for_database``: only the PostgreSQL runs need services.
DATABASES = [pytest.param("postgresql", marks=[pytest.mark.rabbitmq, pytest.mark.postgres]), "sqlite"]


def settings_for_database(request: Any, tmp_path: Path) -> Settings:
    """For a fixture parametrized over ``DATABASES``: the ``settings`` fixture (the real PostgreSQL and
    RabbitMQ), or SQLite in ``tmp_path`` with the in-process broker, migrated."""
    if request.param == "postgresql":
        return request.getfixturevalue("settings")
    settings = Settings.from_env({}, database_url=f"sqlite:///{tmp_path / 'api.db'}", auth="off")
    upgrade(settings)
    return settings


# -- a worker killed in the middle of a write (crash tests) ----------------------------------------


def marks(engine: Engine, task_id: str) -> list[str]:
    """The ``bench_runs`` markers a task's body and steps wrote, in order."""
    with engine.connect() as connection:
        query = text("SELECT kind FROM bench_runs WHERE task_id = :t ORDER BY at")
        return [row.kind for row in connection.execute(query, {"t": task_id})]


def blocked_backend(engine: Engine, pattern: str) -> int | None:
    """The server pid of a session of the test database waiting for a lock in a statement LIKE ``pattern``."""
    with engine.connect() as connection:
        return connection.execute(
            text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE :q"
            ),
            {"q": pattern},
        ).scalar()


def kill_while_blocked(blocker: Connection, worker_pid: int, backend_pid: int) -> None:
    """SIGKILL the worker process, end its database session (the blocked statement never commits), unblock."""
    os.kill(worker_pid, signal.SIGKILL)
    assert blocker.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend_pid}).scalar()
    blocker.rollback()
