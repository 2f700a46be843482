"""The task run each worker thread is handling, shared by Interlock's middleware and the actor.

:class:`~actors.middleware.claiming.Claiming` starts a run when it claims a task; the actor
(``actors.broker``) runs the workflow for it and hands the outcome to it; the after hooks of
``WorkerMetrics``, ``Claiming`` and ``Recycling`` read it; :class:`CurrentRun` ends it once they all
have, as Dramatiq's own ``CurrentMessage`` middleware does for the message.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from actors.running import RunningTask

__all__ = ["TaskRun", "CurrentRun", "current_run", "start_run"]

_local = threading.local()


@dataclass
class TaskRun:
    task_id: str
    attempt: int
    input: dict[str, Any]
    started: float
    priority: int = 0
    #: The coordinating task that spawned this one, woken when it ends.
    parent_id: str | None = None
    #: What the workflow returned (``SUSPENDED`` while it waits for children).
    outcome: Any = None
    #: The run's LLM token usage (the TaskContext adds to it), for metrics.
    usage: dict[str, int] = field(default_factory=dict)
    #: Its deadlines and cancellation, in the process's registry of running tasks while it runs.
    running: RunningTask | None = None


def current_run() -> TaskRun | None:
    """The task the calling worker thread is running, if any."""
    return getattr(_local, "run", None)


def start_run(run: TaskRun) -> None:
    """The calling worker thread runs ``run`` until :class:`CurrentRun` ends it."""
    _local.run = run


class CurrentRun(Middleware):
    """Ends the thread's task run after every other after hook has seen it.

    It comes first in the broker's middleware, so its after hooks run last (Dramatiq runs
    ``after_*`` hooks in reverse order).
    """

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        _local.run = None

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        _local.run = None
