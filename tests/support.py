"""Helpers shared by the test suites: reading tasks and events, and waiting for them with a deadline
(``wait_until`` and ``free_port`` come from ``testkit``, which the benchmarks use too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models.tasks import Task, TaskEvent
from testkit.processes import free_port
from testkit.waiting import wait_until

__all__ = ["events", "free_port", "get_task", "json_of", "llm_calls", "wait_for_state", "wait_until"]


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


def settings_for_database(request: Any, tmp_path: Path) -> Any:
    """For a test parametrized over ``"postgresql"`` and ``"sqlite"``: the ``settings`` fixture (the
    real PostgreSQL and RabbitMQ), or SQLite in ``tmp_path`` with the in-process broker, migrated."""
    from interlock.settings import Settings
    from models.migrations import upgrade

    if request.param == "postgresql":
        return request.getfixturevalue("settings")
    settings = Settings.from_env({}, database_url=f"sqlite:///{tmp_path / 'api.db'}", auth="off")
    upgrade(settings)
    return settings
