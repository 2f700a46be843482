"""Workflows that exist only for tests; loaded through INTERLOCK_AGENT_MODULES=tests.workflows."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from actors.context import TaskContext
from actors.registry import workflow


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


@workflow("test_busy", queue="default")
def busy(ctx: TaskContext) -> dict[str, Any]:
    """Works for ``context.seconds`` in short slices, with no call or step boundary that could stop it."""
    until = time.monotonic() + float(ctx.context.get("seconds", 10))
    while time.monotonic() < until:
        time.sleep(0.01)
    return {"status": "success", "result": "done"}
