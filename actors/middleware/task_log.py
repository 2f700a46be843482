"""One log line per task run that ends, as Celery's "Task … succeeded in 0.41s".

The line carries ``task_id``, ``workflow``, ``state``, ``attempts`` and ``duration`` (seconds) as
record attributes, which ``INTERLOCK_LOG_FORMAT=json`` turns into fields of its own. Finished
runs (SUCCESS, FAILURE, CANCELLED) log at INFO; a run that will be retried logs at WARNING.
A coordinator that suspends to wait for its children logs nothing: it has not ended.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from actors.catalogue import WorkflowSpec, spec_for_actor
from actors.middleware.current_run import TaskRun
from models.tasks import TaskState

__all__ = ["log_outcome"]

logger = logging.getLogger(__name__)


def log_outcome(catalogue: Mapping[str, WorkflowSpec], message: Any, run: TaskRun, state: str) -> None:
    """Log how this run of a task ended, once its state is recorded."""
    spec = spec_for_actor(catalogue, message.actor_name)
    workflow = spec.name if spec else message.actor_name
    # One value for the field and the message: rounding each separately could disagree (0.2749 s
    # reads "0.27s" beside a field of 0.275).
    duration = round(time.monotonic() - run.started, 3)
    fields = {
        "task_id": run.task_id,
        "workflow": workflow,
        "state": str(state),
        "attempts": run.attempt,
        "duration": duration,
    }
    level = logging.WARNING if state == TaskState.RETRY else logging.INFO
    logger.log(
        level, "task %s (%s) %s in %.2fs, attempt %d", run.task_id, workflow, state, duration, run.attempt, extra=fields
    )
