"""Workflows that the benchmarks and the tests both run (INTERLOCK_AGENT_MODULES=testkit.workflows).

``bench_work`` writes its markers to ``bench_runs`` (``testkit.markers``). Importing this module
registers the workflows in the process-wide catalogue: load it through ``agent_modules`` only.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from actors.catalogue import workflow
from actors.context import TaskContext

__all__ = ["noop", "work"]

_MARK = text("INSERT INTO bench_runs (task_id, system, kind) VALUES (:task_id, 'interlock', :kind)")


@workflow("bench_noop", queue="default")
def noop(ctx: TaskContext) -> dict[str, Any]:
    """W1: nothing but Interlock's own bookkeeping."""
    return {"status": "success"}


@workflow("bench_work", queue="default")
def work(ctx: TaskContext) -> dict[str, Any]:
    """W5/W6: note the start, sleep ``context.sleep`` seconds, note the completion of the body.

    The two notes are transactional steps: each row commits with its step's checkpoint, so it is
    written once per task however often a crash makes the body run again (the sleep between is
    plain code and does run again).
    """
    ctx.transactional_step("start", _mark, ctx.task_id, "start")
    time.sleep(float(ctx.context.get("sleep", 0)))
    ctx.transactional_step("done", _mark, ctx.task_id, "done")
    return {"status": "success"}


def _mark(session: Session, task_id: str, kind: str) -> None:
    session.execute(_MARK, {"task_id": task_id, "kind": kind})
