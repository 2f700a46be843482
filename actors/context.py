"""What a running workflow sees: its input, progress reporting, limits, the LLM and durable steps."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from interlock.settings import Settings
from models.checkpoints import COMPLETED, FAILED, load_checkpoints, save_checkpoint
from models.tasks import TaskState, record_event, record_progress

from .errors import SoftTimeLimitExceeded, TaskCancelled
from .llm import Completion
from .runtime import Runtime

__all__ = ["TaskContext"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class TaskContext:
    """Handed to every workflow function; one per task attempt."""

    task_id: str
    input: dict[str, Any]
    attempt: int
    runtime: Runtime
    soft_deadline: float
    usage: dict[str, int] = field(default_factory=dict)
    _completed_steps: dict[str, Any] | None = None

    @property
    def query(self) -> str:
        return str(self.input.get("query", ""))

    @property
    def context(self) -> dict[str, Any]:
        value = self.input.get("context") or {}
        return value if isinstance(value, dict) else {}

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    def soft_time_left(self) -> float:
        return self.soft_deadline - time.monotonic()

    def check(self) -> None:
        """Step boundary: stop here if the soft limit passed."""
        if self.soft_time_left() <= 0:
            raise SoftTimeLimitExceeded(
                f"soft time limit of {self.runtime.settings.soft_time_limit:g}s passed"
            )

    def progress(self, percent: int, step: str, **data: Any) -> None:
        """Record progress durably and notice a cancellation or a passed soft limit."""
        with self.runtime.sessions.begin() as session:
            state = record_progress(session, self.task_id, progress=percent, step=step, data=data or None)
        if state == TaskState.CANCELLED:
            raise TaskCancelled(f"task {self.task_id} was cancelled")
        self.check()

    def event(self, kind: str, step: str | None = None, **data: Any) -> None:
        with self.runtime.sessions.begin() as session:
            record_event(
                session,
                self.task_id,
                kind=kind,
                state=TaskState.PROCESSING,
                progress=-1,
                step=step,
                data=data,
            )

    def complete(self, messages: list[dict[str, str]]) -> Completion:
        """One LLM call; its token usage is added to the task's."""
        completion = self.runtime.llm.complete(messages)
        for key, value in completion.usage.items():
            self.usage[key] = self.usage.get(key, 0) + value
        return completion

    # -- durable steps -----------------------------------------------------------------------

    def completed_steps(self) -> dict[str, Any]:
        """Results of the steps that finished in earlier attempts, by stage name."""
        if self._completed_steps is None:
            with self.runtime.sessions() as session:
                self._completed_steps = {
                    c.stage: c.state.get("result")
                    for c in load_checkpoints(session, self.task_id)
                    if c.status == COMPLETED
                }
        return self._completed_steps

    def step(self, name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` once per workflow: its result is checkpointed the moment it returns.

        A later attempt (retry, crash redelivery, resume) gets the stored result back without
        running ``fn`` again, so paid LLM calls are never made twice. Results must be JSON.
        """
        done = self.completed_steps()
        if name in done:
            logger.info("step %s already completed, reusing its checkpoint", name)
            return done[name]
        self.check()
        started = time.monotonic()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            with self.runtime.sessions.begin() as session:
                save_checkpoint(
                    session,
                    workflow_id=self.task_id,
                    stage=name,
                    status=FAILED,
                    state={"input": self.input, "attempt": self.attempt},
                    meta={"traceback": traceback.format_exc(limit=20), "attempt": self.attempt},
                    error=f"{type(exc).__name__}: {exc}",
                    duration_ms=int((time.monotonic() - started) * 1000),
                )
            raise
        with self.runtime.sessions.begin() as session:
            save_checkpoint(
                session,
                workflow_id=self.task_id,
                stage=name,
                status=COMPLETED,
                state={"result": result, "input": self.input},
                meta={"attempt": self.attempt},
                duration_ms=int((time.monotonic() - started) * 1000),
            )
        done[name] = result
        return result
