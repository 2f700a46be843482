"""Workflows that exist only for tests; loaded through INTERLOCK_AGENT_MODULES=tests.workflows."""

from __future__ import annotations

import os
import signal
import time
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from actors.catalogue import workflow
from actors.context import TaskContext
from actors.errors import PermanentError


@workflow("test_self_kill", queue="default", submittable=True)
def self_kill(ctx: TaskContext) -> dict[str, Any]:
    """Dies like an out-of-memory kill on every delivery, until the file named in `fixed_flag` exists."""
    flag = ctx.context.get("fixed_flag")
    if not (flag and os.path.exists(flag)):
        os.kill(os.getpid(), signal.SIGKILL)
    return {"status": "success", "result": "survived"}


@workflow("test_echo", queue="default")
def echo(ctx: TaskContext) -> dict[str, Any]:
    """Returns at once: for tests that count tasks, not LLM calls."""
    ctx.progress(50, "echo")
    return {"status": "success", "result": ctx.query}


@workflow("test_fail", queue="default", max_retries=0)
def fail(ctx: TaskContext) -> dict[str, Any]:
    """Fails at once and for good: its message is dead-lettered."""
    raise PermanentError(f"test_fail: {ctx.query}")


@workflow("test_internal", queue="default", submittable=False)
def internal(ctx: TaskContext) -> dict[str, Any]:
    """Not submittable: only the system's tasks may start it as a child."""
    return {"status": "success", "ran": "test_internal"}


@workflow("test_spawn", queue="default")
def spawn_child(ctx: TaskContext) -> dict[str, Any]:
    """Starts the workflow named in `context.child` as a child and returns its result."""
    return ctx.call(str(ctx.context["child"]), {"query": "child of test_spawn", "context": {}}, key="child")


@workflow("test_publish", queue="default")
def publish(ctx: TaskContext) -> dict[str, Any]:
    """Publishes `context.event_type` with `context.data` (ctx.publish), as its task's tenant."""
    event_id, task_ids = ctx.publish(str(ctx.context["event_type"]), dict(ctx.context.get("data") or {}), source="test")
    return {"event_id": event_id, "task_ids": task_ids}


@workflow("test_busy", queue="default")
def busy(ctx: TaskContext) -> dict[str, Any]:
    """Works for ``context.seconds`` in short slices, with no call or step boundary that could stop it."""
    until = time.monotonic() + float(ctx.context.get("seconds", 10))
    while time.monotonic() < until:
        time.sleep(0.01)
    return {"status": "success", "result": "done"}


_MARK = text("INSERT INTO bench_runs (task_id, system, kind) VALUES (:task_id, 'interlock', :kind)")


@workflow("test_counted", queue="default")
def counted(ctx: TaskContext) -> dict[str, Any]:
    """Counts its body's runs in ``bench_runs`` (``body <token>``, a write of its own outside any step),
    sleeps ``context.sleep`` seconds, notes ``done`` in a transactional step, returns the run's token."""
    token = uuid.uuid4().hex
    with ctx.runtime.sessions.begin() as session:
        _mark(session, ctx.task_id, f"body {token}")
    time.sleep(float(ctx.context.get("sleep", 0)))
    ctx.transactional_step("done", _mark, ctx.task_id, "done")
    return {"status": "success", "token": token}


def _mark(session: Session, task_id: str, kind: str) -> None:
    session.execute(_MARK, {"task_id": task_id, "kind": kind})
