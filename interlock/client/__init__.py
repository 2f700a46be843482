"""Interlock's Python client: submit tasks to an Interlock API and follow them, blocking or with asyncio.

>>> from interlock.client import Client
>>> with Client("http://127.0.0.1:8000", key) as client:
...     task = client.submit("Explain durable execution", idempotency_key="order-42")
...     for event in task.stream():
...         print(event.progress, event.step)
...     answer = task.result(timeout=60)

It talks HTTP only (httpx2) and imports nothing of the server: a program that submits work needs
neither Dramatiq, SQLAlchemy nor Falcon at run time. Errors are typed (:mod:`.errors`), answers
are frozen dataclasses (:mod:`.models`). See docs/client.md.
"""

from .asynchronous import AsyncClient, AsyncTaskHandle
from .calls import RetryPolicy
from .errors import (
    ApiError,
    BadRequest,
    ClientError,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InvalidResponse,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ResultTimeout,
    ServerError,
    ServiceUnavailable,
    TaskCancelled,
    TaskError,
    TaskFailed,
    Unauthorized,
    UnprocessableEntity,
    UnsupportedMediaType,
)
from .models import (
    TERMINAL_STATES,
    Cancellation,
    Checkpoint,
    ChildTask,
    DeadLetter,
    DeadLetterQueue,
    Purged,
    QueueReplay,
    Submitted,
    TaskEvent,
    TaskStatus,
    WorkflowHistory,
)
from .sync import Client, TaskHandle

__all__ = [
    "Client",
    "TaskHandle",
    "AsyncClient",
    "AsyncTaskHandle",
    "RetryPolicy",
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
    "TERMINAL_STATES",
    "Submitted",
    "TaskStatus",
    "ChildTask",
    "TaskEvent",
    "Cancellation",
    "Checkpoint",
    "WorkflowHistory",
    "DeadLetter",
    "DeadLetterQueue",
    "QueueReplay",
    "Purged",
]
