"""Lets a worker process hold its agent slots' worth of tasks while only so many run at once.

First in the broker's middleware: a task passes :class:`~actors.running.StartGate` before any
other hook runs for it (before it is claimed, so a task queued at the gate holds no lease and
its time limit has not started) and leaves it at its first wait on a call
(:meth:`~actors.running.RunningTask.wait`) or, at the latest, after every after hook ran.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from actors.running import leave_start_gate
from actors.runtime import Runtime

__all__ = ["StartGating"]


class StartGating(Middleware):
    """Passes each task through the runtime's start gate (nothing to do without one)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        gate = self.runtime.start_gate
        if gate is not None:
            gate.enter()

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        leave_start_gate()

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        leave_start_gate()
