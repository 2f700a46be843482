"""Interlock workflows used only by the benchmarks (INTERLOCK_AGENT_MODULES=bench.workflows)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import text

from actors.context import TaskContext
from actors.registry import workflow

_MARK = text("INSERT INTO bench_runs (task_id, system, kind) VALUES (:task_id, 'interlock', :kind)")


@workflow("bench_noop", queue="default")
def noop(ctx: TaskContext) -> dict[str, Any]:
    """W1: nothing but Interlock's own bookkeeping."""
    return {"status": "success"}


@workflow("bench_work", queue="default")
def work(ctx: TaskContext) -> dict[str, Any]:
    """W5/W6: note the start, sleep ``context.sleep`` seconds, note the completion of the body."""
    with ctx.runtime.sessions.begin() as session:
        session.execute(_MARK, {"task_id": ctx.task_id, "kind": "start"})
    time.sleep(float(ctx.context.get("sleep", 0)))
    with ctx.runtime.sessions.begin() as session:
        session.execute(_MARK, {"task_id": ctx.task_id, "kind": "done"})
    return {"status": "success"}
