"""The client's exception tree: every failure of a call, and every unhappy end of a task, is typed.

An error answer of the API (``{title, description}`` with a 4xx or 5xx status) becomes the
subclass of :class:`ApiError` for its status; an API that cannot be reached, or a connection that
keeps dropping, :class:`ConnectionFailed`; an answer that is not the API's JSON,
:class:`InvalidResponse`. A task that ends FAILURE or CANCELLED raises :class:`TaskFailed` or
:class:`TaskCancelled` from ``result()``, and a wait that runs out :class:`ResultTimeout`. All of
them derive from :class:`ClientError`, itself an :class:`interlock.errors.InterlockError`. No
message carries the API key: only the method, the path and what the API said.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from interlock.errors import InterlockError

__all__ = [
    "ClientError",
    "ConnectionFailed",
    "InvalidResponse",
    "ApiError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "UnprocessableEntity",
    "RateLimited",
    "ServiceUnavailable",
    "ServerError",
    "TaskError",
    "TaskFailed",
    "TaskCancelled",
    "ResultTimeout",
    "api_error",
    "retry_after_seconds",
]


class ClientError(InterlockError):
    """Base of every error the Interlock client raises."""


class ConnectionFailed(ClientError):
    """The API could not be reached, or the connection dropped, and retrying did not help."""


class InvalidResponse(ClientError):
    """The API answered something that is not its JSON (a proxy's page, a wrong ``url``)."""


class ApiError(ClientError):
    """The API answered an error: its status, and the ``title`` and ``description`` it gave."""

    #: The status this class stands for (``0``: any status without a class of its own).
    status_code = 0

    def __init__(
        self,
        *,
        method: str,
        path: str,
        status: int,
        title: str,
        description: str,
        retry_after: float | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.title = title
        self.description = description
        #: Seconds the API asked the caller to wait before trying again (``Retry-After``), if it did.
        self.retry_after = retry_after
        said = f"{title}: {description}" if description else title
        super().__init__(f"{method} {path} answered {status} {said}")


class BadRequest(ApiError):
    """400: the request is malformed (a bad field, an unknown workflow, an invalid parameter)."""

    status_code = 400


class Unauthorized(ApiError):
    """401: no API key, or one the API does not know (wrong, revoked)."""

    status_code = 401


class Forbidden(ApiError):
    """403: the key lacks the scope the route needs, or the route is for operators only."""

    status_code = 403


class NotFound(ApiError):
    """404: no such task, workflow or dead letter (or it belongs to another tenant)."""

    status_code = 404


class Conflict(ApiError):
    """409: the task is in a state that does not allow it (cancel a finished task, resume a running one)."""

    status_code = 409


class PayloadTooLarge(ApiError):
    """413: the body is over ``INTERLOCK_MAX_BODY_BYTES``."""

    status_code = 413


class UnsupportedMediaType(ApiError):
    """415: the body is not JSON."""

    status_code = 415


class UnprocessableEntity(ApiError):
    """422: the ``Idempotency-Key`` was used before with a different body."""

    status_code = 422


class RateLimited(ApiError):
    """429: the tenant's monthly token budget is used, or a rate limit holds; see ``retry_after``."""

    status_code = 429


class ServiceUnavailable(ApiError):
    """503: the broker or the database is unavailable; nothing was written, retry after ``retry_after``."""

    status_code = 503


class ServerError(ApiError):
    """Any other 5xx: the API failed; its log says why."""

    status_code = 500


_BY_STATUS: dict[int, type[ApiError]] = {
    cls.status_code: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        UnprocessableEntity,
        RateLimited,
        ServiceUnavailable,
    )
}


class TaskError(ClientError):
    """A task ended without a result: its id, final state and error text."""

    def __init__(self, task_id: str, state: str, error: str | None) -> None:
        self.task_id = task_id
        self.state = state
        self.error = error
        super().__init__(f"task {task_id} ended {state}: {error or 'no error recorded'}")


class TaskFailed(TaskError):
    """The task ended FAILURE (its retries used up, or an error that is not retried)."""


class TaskCancelled(TaskError):
    """The task ended CANCELLED."""


class ResultTimeout(ClientError, TimeoutError):
    """``result(timeout=...)`` ran out before the task ended; the task goes on."""

    def __init__(self, task_id: str, timeout: float, state: str | None) -> None:
        self.task_id = task_id
        self.timeout = timeout
        self.state = state
        super().__init__(f"task {task_id} did not end within {timeout:g} s (last seen {state or 'unknown'})")


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds or an HTTP date (RFC 9110); ``None`` if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def api_error(method: str, path: str, status: int, body: Any, headers: Mapping[str, str]) -> ApiError:
    """The typed error for an error answer; ``body`` is its decoded JSON (anything else: ``None``)."""
    title = description = ""
    if isinstance(body, dict):
        title = str(body.get("title") or "")
        description = str(body.get("description") or "")
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return cls(
        method=method,
        path=path,
        status=status,
        title=title or f"HTTP {status}",
        description=description,
        retry_after=retry_after_seconds(headers.get("retry-after")),
    )
