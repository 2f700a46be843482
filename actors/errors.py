"""One exception tree for everything an actor can raise on purpose."""

from __future__ import annotations

from interlock.errors import InterlockError

__all__ = [
    "InterlockError",
    "PermanentError",
    "InvalidInput",
    "TransientError",
    "SoftTimeLimitExceeded",
    "StageTimeLimitExceeded",
    "TimeLimitExceeded",
    "TaskCancelled",
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
