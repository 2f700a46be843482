"""Durable steps: a workflow's paid or effectful work, run once per workflow whatever happens.

A step's result is checkpointed (``models.checkpoints``) the moment it returns; a later attempt
(a retry, a crash redelivery, a resume) gets the stored result back instead of running the step
again. Each step may run for ``INTERLOCK_STAGE_TIME_LIMIT`` seconds: a watchdog interrupts it past
that with :class:`StageTimeLimitExceeded`, a transient error, so the retry resumes at that step.
Every failed run of a step is recorded in its checkpoint, with its traceback.

The body's own end is recorded the same way (:meth:`DurableSteps.record_body`): once a run of a body
that did such work returns, its value is checkpointed before the task's final state is written, so
a run that a crash in between makes start again finishes the task with that value and does not
run the body a second time (:meth:`DurableSteps.earlier_body`).

Workflows reach this through ``ctx.step`` and ``ctx.transactional_step`` (``actors.context``).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from actors.errors import StageTimeLimitExceeded, describe_error
from actors.runtime import Runtime
from actors.watchdog import Alarm
from actors.watchdog import arm as arm_alarm
from interlock import tracing
from models.base import utcnow
from models.checkpoints import (
    BODY,
    CHECKPOINT_WRITES,
    COMPLETED,
    FAILED,
    WorkflowCheckpoint,
    checkpoint_write,
    load_outcomes,
    save_checkpoint,
)
from models.database import autocommit
from models.task_batches import write

__all__ = ["DurableSteps", "EarlierBody", "ERROR_CHARS"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

#: How much of a failed step's error its checkpoint keeps.
ERROR_CHARS = 2000


@dataclass(frozen=True)
class EarlierBody:
    """What an earlier run of the task's body returned (it died before the task's end was written)."""

    result: Any
    attempt: int


class DurableSteps:
    """The checkpointed steps of one task attempt (one per ``TaskContext``)."""

    def __init__(
        self,
        *,
        task_id: str,
        input: dict[str, Any],
        attempt: int,
        runtime: Runtime,
        check: Callable[[], None],
    ) -> None:
        self.task_id = task_id
        self.input = input
        self.attempt = attempt
        self.runtime = runtime
        #: The step boundary's check (cancellation, the hard and soft limits), run before each step.
        self.check = check
        #: While a step runs: when its stage time limit passes (``time.monotonic()``).
        self.stage_deadline: float | None = None
        #: While a step runs: its name (the LLM and tool calls made in it are recorded with it).
        self.current: str | None = None
        #: Whether this run did work that running the body again would repeat or pay for (a step,
        #: an LLM call): then the body's return is recorded before the task's end.
        self.worked = False
        self._completed: dict[str, Any] | None = None
        self._failures: dict[str, list[dict[str, Any]]] = {}
        self._body: EarlierBody | None = None

    def forget_cached(self) -> None:
        """Before a replay: read checkpoints afresh."""
        self._completed = None

    def completed(self) -> dict[str, Any]:
        """Results of the steps that finished in earlier attempts, by stage name."""
        if self._completed is None:
            with autocommit(self.runtime.sessions) as connection:  # reads only: no session, no transaction
                checkpoints = load_outcomes(connection, self.task_id)
            body = next((c for c in checkpoints if c.stage == BODY), None)
            self._body = None if body is None else EarlierBody(body.state.get("result"), int(body.metadata["attempt"]))
            checkpoints = [c for c in checkpoints if c.stage != BODY]
            self._completed = {c.stage: c.state.get("result") for c in checkpoints if c.status == COMPLETED}
            self._failures = {c.stage: list(c.metadata.get("failures", [])) for c in checkpoints}
        return self._completed

    def earlier_body(self) -> EarlierBody | None:
        """What an earlier run of the body returned, if one did and the task's end was not written.

        Only a later start of the task can find one (a first attempt reads nothing): a worker killed
        between the body's return and the task's end, or that lost the connection then.
        """
        if self.attempt <= 1:
            return None
        self.completed()
        return self._body

    def record_body(self, result: Any) -> None:
        """The body returned ``result``: checkpoint it before the task's end is written.

        One upsert, and only after a body that :attr:`worked` (ran a step, an LLM or tool call),
        whose own writes make one more cheap. A body that did none costs nothing more (a no-op
        task still writes its claim and its end, no more) and, as before, runs again if its worker
        dies between its return and the task's end.
        """
        if not self.worked:
            return
        saved = checkpoint_write(
            workflow_id=self.task_id,
            stage=BODY,
            status=COMPLETED,
            state={"result": result},
            meta={"attempt": self.attempt},
        )
        write(self.runtime.sessions, CHECKPOINT_WRITES, saved)  # committed when it returns

    def step(self, name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` once per workflow; see ``TaskContext.step``."""
        self.worked = True
        done = self.completed()
        if name in done:
            logger.info("step %s already completed, reusing its checkpoint", name)
            return cast(T, done[name])
        with self._attempt(name) as attempt:
            result = fn(*args, **kwargs)
            attempt.stop_watchdog()
        # One upsert, committed when it returns; those of steps that end together are one statement.
        write(self.runtime.sessions, CHECKPOINT_WRITES, self._completion(name, result, attempt))
        done[name] = result
        return result

    def transactional_step(
        self, name: str, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(session, ...)`` once per workflow, in its checkpoint's transaction; see ``TaskContext``."""
        self.worked = True
        done = self.completed()
        if name in done:
            logger.info("step %s already completed, reusing its checkpoint", name)
            return cast(T, done[name])
        with self._attempt(name) as attempt, self.runtime.sessions.begin() as session:
            stored = _locked_checkpoint(session, self.task_id, name)
            if stored is not None and stored.status == COMPLETED:
                # Another run of this task completed the step after we read the checkpoints.
                logger.warning("step %s was completed by another run meanwhile, reusing its checkpoint", name)
                result = cast(T, stored.state.get("result"))
            else:
                result = fn(session, *args, **kwargs)
                attempt.stop_watchdog()  # from here on, only the commit can fail the step
                save_checkpoint(session, self._completion(name, result, attempt))
        done[name] = result
        return result

    @contextmanager
    def _attempt(self, name: str) -> Iterator[_Attempt]:
        """One run of a step's work: the soft-limit check, the stage watchdog, the failure record."""
        self.check()
        failures = self._failures.setdefault(name, [])
        limit = self.runtime.settings.stage_time_limit
        alarm = arm_alarm(limit, StageTimeLimitExceeded)
        attempt = _Attempt(started=time.monotonic(), failures=failures, watchdog=alarm)
        self.stage_deadline = attempt.started + limit
        self.current = name
        span = tracing.start(f"step {name}", {"interlock.step": name, "interlock.attempt": self.attempt}, current=True)
        try:
            yield attempt
        except BaseException as exc:
            span.fail(exc)
            attempt.stop_watchdog()
            error = describe_error(exc, limit=ERROR_CHARS)
            failures.append(
                {
                    "attempt": self.attempt,
                    "error": error,
                    "at": utcnow().isoformat(),
                    "duration_ms": attempt.elapsed_ms(),
                }
            )
            with self.runtime.sessions.begin() as session:
                stored = _locked_checkpoint(session, self.task_id, name)
                # Never overwrite a completion (another run of the task may have made it meanwhile).
                if stored is None or stored.status != COMPLETED:
                    failed = checkpoint_write(
                        workflow_id=self.task_id,
                        stage=name,
                        status=FAILED,
                        state={"input": self.input},
                        meta={"traceback": traceback.format_exc(limit=20), "failures": failures},
                        error=error,
                        duration_ms=attempt.elapsed_ms(),
                    )
                    save_checkpoint(session, failed)
            raise
        finally:
            span.end()
            attempt.watchdog.cancel()
            self.stage_deadline = None
            self.current = None

    def _completion(self, name: str, result: Any, attempt: _Attempt) -> dict[str, Any]:
        """The checkpoint of a completed step."""
        return checkpoint_write(
            workflow_id=self.task_id,
            stage=name,
            status=COMPLETED,
            state={"result": result, "input": self.input},
            meta={"attempt": self.attempt, "failures": attempt.failures},
            duration_ms=attempt.elapsed_ms(),
        )


@dataclass
class _Attempt:
    started: float
    failures: list[dict[str, Any]]
    watchdog: Alarm

    def stop_watchdog(self) -> None:
        """Disarm the stage time limit; a limit that fired already is raised now, inside the attempt."""
        self.watchdog.cancel()

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)


def _locked_checkpoint(session: Session, task_id: str, stage: str) -> WorkflowCheckpoint | None:
    """The step's checkpoint, locked until the transaction ends (``None`` if it has none yet)."""
    return session.scalars(
        select(WorkflowCheckpoint)
        .where(WorkflowCheckpoint.workflow_id == task_id, WorkflowCheckpoint.stage == stage)
        .with_for_update()
    ).first()
