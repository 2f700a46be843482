"""The tasks a worker process is running right now, and what may stop each one's waits.

Dramatiq's time limit raises an exception in the worker thread, which a thread blocked in a
socket read only sees once the read returns: a task whose LLM answers after 15 s ran the whole
15 s past a 5 s limit. So the outbound calls a task makes do not block its thread in a socket:
the LLM call is a coroutine on the process's I/O loop, a tool call runs in a helper thread
(:mod:`actors.io_loop`), and the task's thread waits for the call's future through
:meth:`RunningTask.wait`, which ends at the earliest of

* the hard time limit (:class:`TimeLimitExceeded`, the task ends FAILURE, not retried),
* the soft time limit, inside :meth:`RunningTask.until_soft_limit` (:class:`SoftTimeLimitExceeded`,
  where the workflow said it can answer with what it has),
* the step's own limit (:class:`StageTimeLimitExceeded`),
* a cancellation (:class:`TaskCancelled`), signalled by the maintenance thread when it sees the
  task's row say CANCELLED,

and abandons the call: a coroutine is cancelled (its connection closed), a helper thread finishes
on its own timeouts, which are bounded by the task's remaining time too (:func:`call_timeout`).

:class:`RunningTasks` is the process's registry of them: the heartbeat renews the leases of these
tasks only, so a task whose thread has moved on can never keep its lease.
"""

from __future__ import annotations

import contextvars
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future
from concurrent.futures import wait as wait_for_first
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from actors.errors import (
    SoftTimeLimitExceeded,
    StageTimeLimitExceeded,
    TaskCancelled,
    TimeLimitExceeded,
    TransientError,
)
from actors.io_loop import IOLoop

__all__ = [
    "RunningTask",
    "RunningTasks",
    "current",
    "running_as",
    "call_timeout",
    "check_interrupted",
    "interruptible",
    "SOCKET_MARGIN",
    "StartGate",
    "leave_start_gate",
]

T = TypeVar("T")
P = ParamSpec("P")

#: A call's own timeout runs this much past the task's deadline, so that the task's wait (which
#: ends exactly at the deadline) reports the time limit rather than the host being slow.
SOCKET_MARGIN = 0.5

_current: contextvars.ContextVar[RunningTask | None] = contextvars.ContextVar("interlock_running_task", default=None)
_held = threading.local()


class StartGate:
    """At most ``width`` tasks of a process between taking their message and their first wait on a call.

    A worker process holds many more tasks than it runs at once (``INTERLOCK_AGENT_SLOTS`` threads,
    against ``INTERLOCK_WORKER_THREADS``): an agent task spends nearly all its time waiting on its
    LLM calls, and a thread parked on a future costs no CPU. What must stay bounded is how many run
    Python at once, or threads fight over the GIL (no-op tasks got slower with more threads). A
    task passes the gate before its first hook runs and leaves it at its first wait (or its end);
    it never queues at the gate again, so a task that holds a database connection while it waits
    cannot deadlock with tasks queued at the gate for a connection.
    """

    def __init__(self, width: int) -> None:
        self.width = width
        self._slots = threading.Semaphore(width)

    def enter(self) -> None:
        """Wait for a place (the calling thread holds it until :func:`leave_start_gate`)."""
        self._slots.acquire()
        _held.gate = self

    def release(self) -> None:
        self._slots.release()


def leave_start_gate() -> None:
    """The calling thread's task waits now (or ended): give its place at the gate, if it holds one, to the next."""
    gate: StartGate | None = getattr(_held, "gate", None)
    if gate is not None:
        _held.gate = None
        gate.release()


@dataclass(eq=False)
class RunningTask:
    """One task attempt in this process: its deadlines (``time.monotonic()``) and its cancellation."""

    task_id: str
    #: The hard deadline; ``math.inf`` outside a worker (a workflow called directly in a test).
    deadline: float = math.inf
    soft_deadline: float = math.inf
    time_limit: float = math.inf
    soft_time_limit: float = math.inf
    #: Runs tool calls in helper threads; ``None``: they run in the task's thread (not interruptible).
    io: IOLoop | None = None
    _cancelled: Future[None] = field(default_factory=Future)
    _soft_scopes: int = 0

    @classmethod
    def starting_now(
        cls, task_id: str, *, time_limit: float, soft_time_limit: float, io: IOLoop | None = None
    ) -> RunningTask:
        now = time.monotonic()
        return cls(
            task_id,
            deadline=now + time_limit,
            soft_deadline=now + min(soft_time_limit, time_limit),
            time_limit=time_limit,
            soft_time_limit=min(soft_time_limit, time_limit),
            io=io,
        )

    # -- what the worker's other threads do to it ------------------------------------------------

    def cancel(self) -> None:
        """The task was cancelled: wake its wait now; its next wait or check raises TaskCancelled."""
        if not self._cancelled.done():
            self._cancelled.set_result(None)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.done()

    # -- what the task's own thread asks ---------------------------------------------------------

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def check(self) -> None:
        """Raise if the task was cancelled or its hard limit (or, inside ``until_soft_limit``, its soft one) passed."""
        if self.cancelled:
            raise TaskCancelled(f"task {self.task_id} was cancelled")
        now = time.monotonic()
        if now >= self.deadline:
            raise self.time_limit_exceeded()
        if self._soft_scopes and now >= self.soft_deadline:
            raise self._soft_limit_exceeded()

    def timeout(self, configured: float) -> float:
        """``configured`` seconds, or fewer when the task's hard limit comes first (it raises once it passed)."""
        self.check()
        return max(0.001, min(configured, self.time_left() + SOCKET_MARGIN))

    @contextmanager
    def until_soft_limit(self) -> Iterator[None]:
        """Inside: a call still waiting at the soft limit is abandoned with SoftTimeLimitExceeded.

        For the part of a workflow that can answer with what it has. Elsewhere a call may run on
        until the hard limit, so that work which would finish in time is not thrown away.
        """
        self._soft_scopes += 1
        try:
            yield
        finally:
            self._soft_scopes -= 1

    def wait(self, future: Future[T], *, what: str, stage_deadline: float | None = None) -> T:
        """The result of ``future``, waited for no longer than this task may wait.

        When a limit passes or the task is cancelled first, the call is abandoned (``future`` is
        cancelled: a coroutine stops and closes its connection) and the matching error raised.
        """
        deadline, error = self._first_limit(stage_deadline, what)
        if not future.done() and not self.cancelled:
            leave_start_gate()
            left = None if math.isinf(deadline) else max(0.0, deadline - time.monotonic())
            watched: list[Future[Any]] = [future, self._cancelled]
            wait_for_first(watched, timeout=left, return_when=FIRST_COMPLETED)
        if future.done():
            try:
                return future.result()
            except CancelledError:
                self.check()
                raise TransientError(f"{what} was cancelled (the worker is shutting down)") from None
        future.cancel()
        if self.cancelled:
            raise TaskCancelled(f"task {self.task_id} was cancelled during its {what}")
        raise error

    def _first_limit(self, stage_deadline: float | None, what: str) -> tuple[float, BaseException]:
        limits: list[tuple[float, BaseException]] = [(self.deadline, self.time_limit_exceeded(what))]
        if self._soft_scopes:
            limits.append((self.soft_deadline, self._soft_limit_exceeded(what)))
        if stage_deadline is not None:
            limits.append((stage_deadline, StageTimeLimitExceeded(f"stage time limit exceeded during its {what}")))
        return min(limits, key=lambda limit: limit[0])

    def time_limit_exceeded(self, what: str = "") -> TimeLimitExceeded:
        during = f" during its {what}" if what else ""
        return TimeLimitExceeded(f"time limit exceeded: the task ran for its limit of {self.time_limit:g}s{during}")

    def _soft_limit_exceeded(self, what: str = "") -> SoftTimeLimitExceeded:
        during = f" during its {what}" if what else ""
        return SoftTimeLimitExceeded(f"soft time limit of {self.soft_time_limit:g}s passed{during}")


class RunningTasks:
    """The tasks this process runs right now, by id (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, RunningTask] = {}
        #: Runs that ended here (the worker's heartbeat reports it: ``actors.worker_reports``).
        self.ended = 0

    def add(self, task: RunningTask) -> None:
        with self._lock:
            self._tasks[task.task_id] = task

    def discard(self, task: RunningTask) -> None:
        with self._lock:
            if self._tasks.get(task.task_id) is task:
                del self._tasks[task.task_id]
                self.ended += 1

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._tasks)

    def cancel(self, task_ids: list[str]) -> list[str]:
        """Signal the cancellation of those of ``task_ids`` still running here; returns them."""
        with self._lock:
            tasks = [self._tasks[task_id] for task_id in task_ids if task_id in self._tasks]
        for task in tasks:
            task.cancel()
        return [task.task_id for task in tasks]

    def __len__(self) -> int:
        with self._lock:
            return len(self._tasks)


def current() -> RunningTask | None:
    """The task the calling thread (or a helper thread working for it) runs, if any."""
    return _current.get()


@contextmanager
def running_as(task: RunningTask) -> Iterator[RunningTask]:
    """Within: :func:`current` is ``task`` (also in helper threads started from here)."""
    token = _current.set(task)
    try:
        yield task
    finally:
        _current.reset(token)


def call_timeout(configured: float) -> float:
    """The timeout for one outbound call: ``configured``, or less if the running task's hard limit is sooner."""
    task = current()
    return configured if task is None else task.timeout(configured)


def check_interrupted() -> None:
    """Between chunks of a long read: stop if the running task was cancelled or ran out of time."""
    task = current()
    if task is not None:
        task.check()


def interruptible(what: str, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` for the running task, in a helper thread whose wait its limits can end.

    Outside a task (or without an I/O loop) it simply runs here.
    """
    task = current()
    if task is None or task.io is None:
        return fn(*args, **kwargs)
    task.check()
    return task.wait(task.io.run_blocking(fn, *args, **kwargs), what=what)
