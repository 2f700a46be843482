"""The ``call_external_api`` tool: GET a JSON API through the SSRF guard, its failures mapped to retry policy.

4xx other than 429 are permanent (retrying cannot help); 429, 5xx, network errors and timeouts
are transient and carry the server's ``Retry-After``, which the broker turns into the retry delay.
Within a task the call runs in a helper thread that the task's time limit or cancellation stops
waiting for (``actors.running.interruptible``), under the host's circuit breaker, and its result
is cached (``INTERLOCK_CACHE_TTL_API``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from actors.errors import InvalidInput, PermanentError
from actors.running import interruptible
from actors.tools.cache import cached_call
from actors.tools.catalogue import SCALAR_SCHEMA, URL_SCHEMA, tool
from actors.tools.circuit_breaker import under_breaker
from actors.tools.http_safety import guarded_get, raise_for_status, read_capped
from interlock.settings import Settings

__all__ = ["call_external_api", "call_api", "get_json"]

Scalar = str | int | float | bool | None


@tool(
    "call_external_api",
    schema={
        "type": "object",
        "title": "call_external_api",
        "properties": {
            "endpoint": URL_SCHEMA,
            "params": {
                "type": "object",
                "description": "Query parameters: scalars, or lists of scalars for repeated keys.",
                "additionalProperties": {"anyOf": [SCALAR_SCHEMA, {"type": "array", "items": SCALAR_SCHEMA}]},
            },
        },
        "required": ["endpoint"],
        "additionalProperties": False,
    },
)
def call_external_api(args: dict[str, Any], *, settings: Settings, sessions: sessionmaker[Session]) -> dict[str, Any]:
    """GET a JSON API; 4xx fail at once, 429/5xx/network errors retry honouring Retry-After."""
    return call_api(args["endpoint"], args.get("params"), settings=settings, sessions=sessions)


def call_api(
    endpoint: str,
    params: Mapping[str, Any] | None = None,
    *,
    settings: Settings,
    sessions: sessionmaker[Session],
) -> dict[str, Any]:
    """``{endpoint, status_code, data, cached}`` of a JSON GET."""
    args = {"endpoint": endpoint, "params": dict(params or {})}
    return cached_call(
        sessions,
        "call_external_api",
        args,
        ttl=settings.cache_ttl_api,
        call=under_breaker(
            sessions,
            endpoint,
            settings=settings,
            call=lambda: interruptible("call_external_api call", get_json, endpoint, params, settings=settings),
        ),
    )


def get_json(endpoint: str, params: Mapping[str, Any] | None = None, *, settings: Settings) -> dict[str, Any]:
    """``{endpoint, status_code, data}`` where ``data`` is the decoded JSON answer."""
    response = guarded_get(
        endpoint, settings=settings, params=_query(params or {}), headers={"Accept": "application/json"}
    )
    raise_for_status(response, what=endpoint)
    status = response.status_code
    body = read_capped(response, limit=settings.api_max_bytes, what=endpoint, setting="INTERLOCK_API_MAX_BYTES")
    try:
        data = json.loads(body) if body else None
    except ValueError as exc:
        raise PermanentError(f"{endpoint} did not answer with JSON: {exc}") from exc
    return {"endpoint": endpoint, "status_code": status, "data": data}


def _query(params: Mapping[str, Any]) -> dict[str, Scalar | list[Scalar]]:
    """Query parameters as requests encodes them: scalars, or lists for repeated keys."""
    query: dict[str, Scalar | list[Scalar]] = {}
    for key, value in params.items():
        if isinstance(value, bool):
            query[key] = "true" if value else "false"
        elif (
            isinstance(value, str | int | float)
            or value is None
            or isinstance(value, list)
            and all(isinstance(v, str | int | float) for v in value)
        ):
            query[key] = value
        else:
            raise InvalidInput(f"query parameter {key!r} must be a string, number, boolean or list of those")
    return query
