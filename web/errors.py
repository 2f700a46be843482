"""Domain errors mapped to HTTP once, for every route; and the guards on every request's input.

Responders let domain errors propagate: :func:`register_error_handlers` maps each to its status
and a JSON ``{title, description}``. Errors whose meaning depends on the route (a bad argument of
one tool, say) are turned into Falcon errors by the resource itself.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import falcon
import falcon.media
from sqlalchemy.exc import DBAPIError

from actors.errors import (
    BrokerUnavailable,
    BudgetExceeded,
    DeadLetterError,
    IdempotencyConflict,
    NotResumable,
    UnknownTask,
)
from models.database import is_transient

__all__ = ["register_error_handlers", "BodyLimit", "InputGuard", "strict_json_handler", "MAX_JSON_DEPTH"]

logger = logging.getLogger(__name__)

#: Deeper JSON is refused: no request needs it, and Python's parser would run out of stack.
MAX_JSON_DEPTH = 64


def check_storable(value: Any, depth: int = 0) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"the JSON is nested more than {MAX_JSON_DEPTH} levels deep")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("strings must not contain NUL characters (\\u0000)")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("strings must be valid Unicode (no lone surrogates)") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_storable(key, depth + 1)
            check_storable(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_storable(item, depth + 1)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON: numbers must be finite (NaN, Infinity and -Infinity are not accepted)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range: numbers must be finite")
    return value


def strict_loads(text: str) -> Any:
    """``json.loads`` that refuses what no route can store or what is not JSON at all.

    Python's parser accepts ``NaN``, ``Infinity`` and ``-Infinity`` and turns ``1e999999`` into
    infinity; none of them is JSON (RFC 8259), PostgreSQL's ``jsonb`` refuses them, and SQLite
    would store what no JSON reader can read back. Also refused: NUL characters, lone surrogates
    and deep nesting. Every JSON body the API reads goes through here, webhooks included.
    """
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError(f"the JSON is nested more than {MAX_JSON_DEPTH} levels deep") from None
    check_storable(value)
    return value


def strict_json_handler() -> falcon.media.JSONHandler:
    return falcon.media.JSONHandler(loads=strict_loads)


def _broker_unavailable(req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]) -> None:
    """Nothing was published (``BrokerUnavailable``) or the dead letters could not be read (``DeadLetterError``)."""
    raise falcon.HTTPServiceUnavailable(
        title="Broker unavailable",
        description=str(ex),
        retry_after=5,
    )


def _idempotency_conflict(req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]) -> None:
    raise falcon.HTTPUnprocessableEntity(title="Idempotency-Key reused", description=str(ex))


def _unknown_task(req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]) -> None:
    """No task has the id in the path; a workflow's id is its task id, and its routes call it so."""
    what = "workflow" if "workflow_id" in params else "task"
    task_id = str(params.get(f"{what}_id", ex))
    raise falcon.HTTPNotFound(title=f"Unknown {what}", description=f"No {what} has the id {task_id!r}.")


def _not_resumable(req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]) -> None:
    raise falcon.HTTPConflict(title="Workflow cannot be resumed", description=str(ex))


def _budget_exceeded(req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]) -> None:
    raise falcon.HTTPTooManyRequests(title="Monthly token budget used", description=str(ex))


def _database_unavailable(req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]) -> None:
    """The database is away or cut the connection (restart, failover, idle cut): nothing was written; retry.

    Connections are not pinged at checkout, so the first request on a stale pool meets the cut;
    SQLAlchemy has then discarded the pool and the retry gets a fresh connection. A server that
    refuses connections (restarting) or picked this transaction as a deadlock victim is as
    temporary: 503 with ``Retry-After``. Anything else is a fault of ours: 500, logged whole.
    """
    if not is_transient(ex):
        logger.error("database error on %s %s", req.method, req.path, exc_info=ex)
        raise falcon.HTTPInternalServerError()
    cause = type(getattr(ex, "orig", None) or ex).__name__
    if isinstance(ex, DBAPIError) and ex.connection_invalidated:
        logger.warning("a database connection was dropped by the server; answered 503 (%s)", cause)
        title, description = "Database connection reset", "The database closed the connection; nothing was written."
    else:
        logger.warning("the database is unavailable; answered 503 (%s)", cause)
        title, description = "Database unavailable", "The database cannot be reached; nothing was written."
    raise falcon.HTTPServiceUnavailable(title=title, description=f"{description} Retry the request.", retry_after=1)


def register_error_handlers(app: falcon.App[falcon.Request, falcon.Response]) -> None:
    app.add_error_handler(DBAPIError, _database_unavailable)
    app.add_error_handler(BudgetExceeded, _budget_exceeded)
    app.add_error_handler(BrokerUnavailable, _broker_unavailable)
    app.add_error_handler(DeadLetterError, _broker_unavailable)
    app.add_error_handler(IdempotencyConflict, _idempotency_conflict)
    app.add_error_handler(UnknownTask, _unknown_task)
    app.add_error_handler(NotResumable, _not_resumable)


class InputGuard:
    """Refuse NUL bytes in the path or query string: no database stores them, none is meaningful."""

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict[str, Any]
    ) -> None:
        values = [v for v in params.values() if isinstance(v, str)] + [req.query_string]
        if any("\x00" in v or "%00" in v for v in values):
            raise falcon.HTTPBadRequest(title="Invalid characters", description="NUL bytes are not accepted.")


class BodyLimit:
    """Refuse bodies over the configured size before anything reads them."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        length = req.content_length
        if length is not None and length > self.max_bytes:
            raise falcon.HTTPContentTooLarge(
                title="Request body too large",
                description=f"The body is {length} bytes; the limit is {self.max_bytes} bytes.",
            )
