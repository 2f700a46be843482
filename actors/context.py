"""What a running workflow sees: its input, progress reporting, limits, the LLM and durable steps."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from actors.call_log import CallLog
from actors.errors import ChildFailed, InvalidInput, PermanentError, SoftTimeLimitExceeded, Suspend, TaskCancelled
from actors.events.bus import EventBus, task_event_id
from actors.llm import Completion
from actors.orchestration import spawn, succeeded
from actors.running import RunningTask, leave_start_gate
from actors.runtime import Runtime
from actors.steps import DurableSteps, EarlierBody
from interlock.settings import Settings
from models import task_lifecycle
from models.database import autocommit, one_statement_session
from models.security import SYSTEM_TENANT
from models.task_calls import LLM, TOOL
from models.task_transitions import record_event
from models.tasks import TERMINAL_STATES, Task, TaskState
from models.tenants import budget_exhausted

__all__ = ["TaskContext"]

T = TypeVar("T")
P = ParamSpec("P")


@dataclass
class TaskContext:
    """Handed to every workflow function; one per task attempt."""

    task_id: str
    input: dict[str, Any]
    attempt: int
    runtime: Runtime
    soft_deadline: float
    priority: int = 0
    usage: dict[str, int] = field(default_factory=dict)
    broker: Any = None  # the dramatiq.Broker this task runs on, for publishing events
    _tenant: str | None = None
    #: The last ``progress(percent, step)`` this run reported, where a gather's progress starts.
    _reported: tuple[int, str] = (0, "")
    #: Its deadlines and cancellation; a workflow called outside a worker has no hard limit.
    running: RunningTask = None  # type: ignore[assignment]
    #: Its durable steps (``actors.steps``): checkpoints, the stage time limit.
    _steps: DurableSteps = field(init=False, repr=False)
    #: Where its LLM and tool calls are recorded (``actors.call_log``).
    _calls: CallLog = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.running is None:
            self.running = RunningTask(self.task_id, soft_deadline=self.soft_deadline)
        self._steps = DurableSteps(
            task_id=self.task_id, input=self.input, attempt=self.attempt, runtime=self.runtime, check=self.check
        )
        self._calls = CallLog(self.runtime, self.task_id, self.attempt, step=lambda: self._steps.current)

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

    @property
    def tenant(self) -> str:
        """The tenant that owns this task, and so the children it starts and the events it publishes."""
        if self._tenant is not None:
            return self._tenant
        with one_statement_session(self.runtime.sessions) as session:
            return self._tenant_in(session)

    def _tenant_in(self, session: Session | Connection) -> str:
        if self._tenant is None:
            self._tenant = session.scalar(select(Task.tenant).where(Task.id == self.task_id)) or SYSTEM_TENANT
        return self._tenant

    # -- children (see actors.orchestration) ---------------------------------------------------

    def call(self, workflow: str, input: dict[str, Any], *, key: str) -> dict[str, Any]:
        """Run ``workflow`` as a child and return its result; suspends this task until it ends."""
        result = self.gather([(workflow, input, key)])[0]
        assert result is not None
        return result

    def gather(
        self,
        calls: list[tuple[str, dict[str, Any], str]],
        *,
        partial: bool = False,
        progress_to: int | None = None,
    ) -> list[dict[str, Any] | None]:
        """Run children in parallel and return their results in order, once all have ended.

        A failed child fails this task with its error, unless ``partial`` is set: then its place
        in the list holds ``None`` and the caller decides. With ``progress_to``, this task's
        progress moves from the percentage it last reported toward ``progress_to`` as the
        children progress and end (recorded each time one ends and wakes this task).
        """
        children = [
            spawn(self.runtime, self.task_id, workflow, input, key=key, priority=self.priority)
            for workflow, input, key in calls
        ]
        with self.runtime.sessions() as session:
            current = [session.get(type(child), child.id) for child in children]
        if any(child is None or child.state not in TERMINAL_STATES for child in current):
            if progress_to is not None:
                self._progress_towards(progress_to, current)
            raise Suspend(f"waiting for {sum(1 for c in current if c and c.state not in TERMINAL_STATES)} children")
        results: list[dict[str, Any] | None] = []
        for child in current:
            assert child is not None
            if succeeded(child):
                results.append(child.result)
            elif partial:
                results.append(None)
            else:
                raise ChildFailed(child)
        return results

    def soft_time_left(self) -> float:
        return self.soft_deadline - time.monotonic()

    def check(self) -> None:
        """Step boundary: stop here if the task was cancelled, or the hard or the soft limit passed."""
        self.running.check()
        if self.soft_time_left() <= 0:
            raise SoftTimeLimitExceeded(f"soft time limit of {self.runtime.settings.soft_time_limit:g}s passed")

    def until_soft_limit(self) -> AbstractContextManager[None]:
        """Mark the part of a workflow that can answer with what it has: a call still waiting at
        the soft limit is abandoned there with SoftTimeLimitExceeded, for the workflow to catch.

        Elsewhere an LLM or tool call may wait until the hard limit (then the task fails with
        "time limit exceeded"), so that an answer that would come in time is not thrown away.
        """
        return self.running.until_soft_limit()

    def progress(self, percent: int, step: str, **data: Any) -> None:
        """Record progress durably and notice a cancellation or a passed soft limit.

        Progress never goes back: a report below what the task already showed (a retry or a
        replay passing an earlier report again) is not recorded.
        """
        self._reported = (percent, step)
        self._record_progress(percent, step, data)
        self.check()

    def _progress_towards(self, target: int, children: list[Task | None]) -> None:
        """While children run, move from the last reported percentage toward ``target`` with them."""
        start, step = self._reported
        ended = sum(1 for c in children if c is not None and c.state in TERMINAL_STATES)
        share = sum(100 if c.state in TERMINAL_STATES else c.progress for c in children if c is not None)
        percent = start + (target - start) * share // (100 * len(children))
        if percent > start:
            self._record_progress(percent, step or "waiting", {"children_ended": ended, "children": len(children)})

    def _record_progress(self, percent: int, step: str, data: dict[str, Any]) -> None:
        state = task_lifecycle.report_progress(
            self.runtime.sessions, self.task_id, progress=percent, step=step, data=data or None
        )
        if state == TaskState.CANCELLED:
            raise TaskCancelled(f"task {self.task_id} was cancelled")

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

    def publish(self, event_type: str, data: dict[str, Any], *, source: str, key: str = "") -> tuple[str, list[str]]:
        """Publish an event (``actors.events.bus``) once per (task, type, ``key``), even if the task is retried.

        The event id is derived from the task id, so a retried task publishes the same event again
        (to the same downstream tasks, which then run once) instead of a second one. The event and
        its tasks belong to the task's tenant.
        """
        if self.broker is None:
            raise InvalidInput("this task context has no broker to publish events with")
        event_id = task_event_id(self.task_id, event_type, key)
        bus = EventBus.for_runtime(self.runtime, self.broker)
        return bus.publish(
            event_type, data, source=source, event_id=event_id, published_by=self.task_id, tenant=self.tenant
        )

    def complete(self, messages: list[dict[str, str]]) -> Completion:
        """One LLM call; its token usage is added to the task's.

        The call waits no longer than the task may (see :meth:`RunningTask.wait`): past the hard
        limit it is abandoned with TimeLimitExceeded, past a step's limit with
        StageTimeLimitExceeded, on cancellation with TaskCancelled.
        """
        running = self.running
        self._steps.worked = True  # a paid call: the body's return is recorded (actors.steps)
        leave_start_gate()  # from here it waits: on the rate limit, then on the call
        limits = self.runtime.llm_limits
        if limits is not None:
            deadline = min(self._steps.stage_deadline or self.soft_deadline, running.deadline)
            limits.before_call(self.runtime.llm.model, deadline=deadline)
        timeout = running.timeout(self.runtime.settings.llm_timeout)
        with autocommit(self.runtime.sessions) as connection:  # reads only: no session, no transaction
            tenant = self._check_budget(connection)
        record = self._calls.begin(LLM, self.runtime.llm.model)  # its page shows it in flight
        call = self.runtime.llm.start(messages, timeout=timeout)
        try:
            completion = running.wait(call, what="LLM call", stage_deadline=self._steps.stage_deadline)
        except BaseException as exc:
            record.failed(exc)
            raise
        if limits is not None:
            limits.after_call(completion.model, completion.usage.get("total_tokens", 0))
        for key, value in completion.usage.items():
            self.usage[key] = self.usage.get(key, 0) + value
        record.ended(  # and the tokens counted against the tenant's budget, in the same write
            prompt_tokens=int(completion.usage.get("prompt_tokens", 0)),
            completion_tokens=int(completion.usage.get("completion_tokens", 0)),
            tenant=tenant,
            tokens=int(completion.usage.get("total_tokens", 0)),
        )
        return completion

    @contextmanager
    def tool_call(self, name: str) -> Iterator[None]:
        """Record the tool call made inside for the task's timeline: ``with ctx.tool_call("scrape_url"): ...``."""
        self._steps.worked = True  # an effect outside the database: the body's return is recorded
        record = self._calls.begin(TOOL, name)
        try:
            yield
        except BaseException as exc:
            record.failed(exc)
            raise
        record.ended()

    def _check_budget(self, session: Session | Connection) -> str:
        """The task's tenant; stops the workflow with a clear error once the tenant's budget is used."""
        tenant = self._tenant_in(session)
        exhausted = budget_exhausted(session, tenant)
        if exhausted is not None:
            raise PermanentError(f"stopped: {exhausted}")
        return tenant

    # -- durable steps (see actors.steps) -------------------------------------------------------

    def earlier_body(self) -> EarlierBody | None:
        """For the worker, before it runs the body: what an earlier run of it returned, if the task's end
        was not written then (its worker died in between). The task is then only finished, with that value."""
        return self._steps.earlier_body()

    def record_body(self, result: Any) -> None:
        """For the worker, when the body returned (not suspended): record ``result`` before the task's end."""
        self._steps.record_body(result)

    def forget_cached_steps(self) -> None:
        """Before a replay: read checkpoints afresh."""
        self._steps.forget_cached()

    def completed_steps(self) -> dict[str, Any]:
        """Results of the steps that finished in earlier attempts, by stage name."""
        return self._steps.completed()

    def step(self, name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` once per workflow: its result is checkpointed the moment it returns.

        A later attempt (retry, crash redelivery, resume) gets the stored result back without
        running ``fn`` again, so paid LLM calls are never made twice. Results must be JSON.
        A step may run for ``INTERLOCK_STAGE_TIME_LIMIT`` seconds; past that it is interrupted
        with :class:`StageTimeLimitExceeded` (a transient error: the retry resumes here).

        The checkpoint is its own transaction, written after ``fn`` returns: a crash in between
        runs ``fn`` again. A step whose effect is a database write belongs in
        :meth:`transactional_step`.
        """
        return self._steps.step(name, fn, *args, **kwargs)

    def transactional_step(
        self, name: str, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(session, *args, **kwargs)`` once per workflow, in the transaction of its checkpoint.

        What ``fn`` writes through ``session`` commits together with the step's checkpoint or not
        at all, so the step's database side effects happen exactly once, whenever the worker
        process dies. A later attempt gets the stored result back without calling ``fn``.
        ``fn`` must not commit or roll back ``session``, and should only touch the database: the
        transaction is open while it runs, so make LLM or HTTP calls in a :meth:`step` before it
        and pass their results in. Results must be JSON; failures and the stage time limit are
        handled as in :meth:`step`.
        """
        return self._steps.transactional_step(name, fn, *args, **kwargs)
