"""GET a JSON API through the SSRF guard, with its failures mapped to retry policy.

4xx other than 429 are permanent (retrying cannot help); 429, 5xx, network errors and timeouts
are transient and carry the server's ``Retry-After``, which the broker turns into the retry delay.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from actors.errors import InvalidInput, PermanentError
from actors.tools.http_safety import guarded_get, raise_for_status, read_capped
from interlock.settings import Settings

__all__ = ["get_json"]

Scalar = str | int | float | bool | None


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
        elif isinstance(value, str | int | float) or value is None:
            query[key] = value
        elif isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
            query[key] = value
        else:
            raise InvalidInput(f"query parameter {key!r} must be a string, number, boolean or list of those")
    return query
