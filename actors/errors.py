"""One exception tree for everything an actor can raise on purpose, as Dramatiq keeps its ``errors.py``.

Every error Interlock's actors, tools, events and submissions raise is here, under
:class:`InterlockError`, so callers (the API's error handlers, the retry policy) find them in one
place. :class:`PermanentError` is never retried; :class:`TransientError` may be, after its
``retry_after``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from interlock.errors import InterlockError

if TYPE_CHECKING:
    from models.tasks import Task

__all__ = [
    "InterlockError",
    "PermanentError",
    "InvalidInput",
    "TransientError",
    "SoftTimeLimitExceeded",
    "StageTimeLimitExceeded",
    "TimeLimitExceeded",
    "TaskCancelled",
    "Suspend",
    "ChildFailed",
    "UnknownWorkflow",
    "UnknownTask",
    "NotResumable",
    "BrokerUnavailable",
    "BudgetExceeded",
    "IdempotencyConflict",
    "DuplicateDelivery",
    "DeadLetterError",
    "UnsafeURL",
    "HostUnavailable",
    "CircuitOpen",
    "QueryRefused",
    "describe_error",
]


class PermanentError(InterlockError):
    """Retrying cannot help (bad input, HTTP 400/401/404): the task fails at once."""


class InvalidInput(PermanentError):
    """The task's input is unusable."""


class TransientError(InterlockError):
    """A retry may succeed (network, timeout, HTTP 429 or 5xx); ``retry_after`` is in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# -- time limits and cancellation (actors.running) ---------------------------------------------


class SoftTimeLimitExceeded(InterlockError):
    """The soft time limit passed: finish early with what you have, the hard limit is near."""


class TimeLimitExceeded(PermanentError):
    """The hard time limit passed: the task ends FAILURE, its in-flight call abandoned.

    Not retried, as Celery does not retry its own: a retry would get the same limit, and
    ``INTERLOCK_MAX_RETRIES`` attempts would stretch the limit an operator set to that many times it.
    """


class StageTimeLimitExceeded(TransientError):
    """One durable step ran past ``INTERLOCK_STAGE_TIME_LIMIT``; the retry resumes at that step."""

    def __init__(self, message: str = "stage time limit exceeded") -> None:
        super().__init__(message)


class TaskCancelled(PermanentError):
    """Somebody cancelled the task: its in-flight call is abandoned, or it stops at its next step boundary."""


# -- children (actors.orchestration) ------------------------------------------------------------


class Suspend(InterlockError):
    """Raised by ``ctx.call``/``ctx.gather`` when children are still running."""


class ChildFailed(PermanentError):
    """A child the workflow waited for ended without success (and the caller did not ask for partial results)."""

    def __init__(self, child: Task) -> None:
        super().__init__(f"{child.workflow} member {child.id} ended {child.state}: {child.error}")
        self.child_id = child.id


# -- submitting and resuming (actors.submit) ----------------------------------------------------


class UnknownWorkflow(InterlockError):
    """No workflow of that name is in the catalogue."""


class UnknownTask(InterlockError):
    """No task has that id."""


class NotResumable(InterlockError):
    """Only a task that ended FAILURE or CANCELLED can be resumed."""

    def __init__(self, task_id: str, state: str) -> None:
        super().__init__(f"task {task_id} is {state}; only FAILURE or CANCELLED tasks can be resumed")
        self.state = state


class BrokerUnavailable(InterlockError):
    """The message could not be published; nothing was kept."""


class BudgetExceeded(InterlockError):
    """The tenant has used its monthly token budget; nothing was submitted."""


class IdempotencyConflict(InterlockError):
    """The idempotency key was used before with a different request body."""


# -- events and dead letters (actors.events, actors.dead_letters) -------------------------------


class DuplicateDelivery(InterlockError):
    """A webhook delivery that was processed before; ``event_id`` is the event it produced then."""

    def __init__(self, provider: str, delivery_id: str, event_id: str | None) -> None:
        super().__init__(f"{provider} delivery {delivery_id!r} was already processed")
        self.event_id = event_id


class DeadLetterError(InterlockError):
    """The broker's dead-letter queues could not be read."""


# -- tools (actors.tools) -----------------------------------------------------------------------


class UnsafeURL(PermanentError):
    """The URL may not be fetched: wrong scheme, or it leads to a non-public address."""


class HostUnavailable(TransientError):
    """The host did not answer usefully (network error, timeout, 5xx): worth a retry later."""


class CircuitOpen(TransientError):
    """The target's breaker is open: the call was not made."""


class QueryRefused(InvalidInput):
    """The query is not a single, side-effect-free SELECT."""


def describe_error(exc: BaseException, *, limit: int) -> str:
    """``Type: message``, cut to ``limit`` characters, as a task's error column and history record it."""
    return f"{type(exc).__name__}: {exc}"[:limit]
