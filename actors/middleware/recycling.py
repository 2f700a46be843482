"""Recycling a worker process after ``INTERLOCK_MAX_TASKS_PER_CHILD`` task runs, as Celery's ``max_tasks_per_child``.

Once the process has run its share, it hands every task message it still receives back to the
queue (for another process), and ``interlock worker``'s process loop sees :attr:`Recycling.exhausted`
and replaces the process. Memory a workflow leaks goes with it.
"""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from actors.messages import interlock_task_id
from actors.middleware.current_run import current_run
from actors.middleware.hand_back import hand_back
from actors.runtime import Runtime

__all__ = ["Recycling"]


class Recycling(Middleware):
    """Counts the task runs this process finished; hands messages back once it has done ``max_tasks``."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        #: Task runs after which the process is recycled (0: never).
        self.max_tasks = runtime.settings.max_tasks_per_child
        self.processed = 0
        #: Set when this process has done its ``max_tasks`` and should be recycled.
        self.exhausted = threading.Event()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        if not self.exhausted.is_set() or interlock_task_id(self.runtime.catalogue, message) is None:
            return
        # This process is being recycled: hand the message back to the queue for another.
        hand_back(broker, message, reason="worker process is being recycled")

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if current_run() is None:
            return
        self.processed += 1
        if self.max_tasks and self.processed >= self.max_tasks:
            self.exhausted.set()
