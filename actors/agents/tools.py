"""The tools agents use, as workflows on the ``tools`` queue and as plain functions.

``POST /tools/{name}`` submits one of them with its arguments as the task input; agent workflows
call :func:`run_tool` (or :func:`scrape`, :func:`call_api`, :func:`query_database`) in-process.
URL tools go through the SSRF guard, the per-host circuit breaker and the result cache; the SQL
tool through the SELECT guard and the cache. Within a task each call runs in a helper thread that
the task's time limit or cancellation stops waiting for (``actors.running.interruptible``), with
its timeouts cut to the task's remaining time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import jsonschema
from sqlalchemy.orm import Session, sessionmaker

from actors.catalogue import workflow
from actors.context import TaskContext
from actors.errors import InvalidInput
from actors.running import call_timeout, interruptible
from actors.tools.cache import cached_call
from actors.tools.circuit_breaker import guard
from actors.tools.external_api import get_json
from actors.tools.http_safety import target_of
from actors.tools.scraping import fetch_page
from actors.tools.sql import check_params, check_select, run_query
from interlock.settings import Settings

__all__ = [
    "TOOLS_QUEUE",
    "TOOL_SCHEMAS",
    "validate_args",
    "run_tool",
    "scrape",
    "call_api",
    "query_database",
]

TOOLS_QUEUE = "tools"
#: Tools are cheap to retry and a fast-failing open breaker spends retries too.
TOOL_MAX_RETRIES = 5
TOOL_TIME_LIMIT = 300.0

_URL = {"type": "string", "minLength": 1, "maxLength": 2048, "description": "An http:// or https:// URL."}
_SCALAR = {"type": ["string", "number", "boolean", "null"]}

TOOL_SCHEMAS: dict[str, dict[str, Any]] = {
    "scrape_url": {
        "type": "object",
        "title": "scrape_url",
        "properties": {"url": _URL},
        "required": ["url"],
        "additionalProperties": False,
    },
    "call_external_api": {
        "type": "object",
        "title": "call_external_api",
        "properties": {
            "endpoint": _URL,
            "params": {
                "type": "object",
                "description": "Query parameters: scalars, or lists of scalars for repeated keys.",
                "additionalProperties": {"anyOf": [_SCALAR, {"type": "array", "items": _SCALAR}]},
            },
        },
        "required": ["endpoint"],
        "additionalProperties": False,
    },
    "batch_api_calls": {
        "type": "object",
        "title": "batch_api_calls",
        "properties": {"endpoints": {"type": "array", "items": _URL, "minItems": 1, "maxItems": 100}},
        "required": ["endpoints"],
        "additionalProperties": False,
    },
    "batch_url_scraping": {
        "type": "object",
        "title": "batch_url_scraping",
        "properties": {
            "urls": {"type": "array", "items": _URL, "minItems": 1, "maxItems": 100},
            "callback": {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "description": "Workflow given all results.",
            },
        },
        "required": ["urls"],
        "additionalProperties": False,
    },
    "execute_database_query": {
        "type": "object",
        "title": "execute_database_query",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 20_000, "description": "One SELECT."},
            "params": {
                "type": "object",
                "description": "Values of the query's :name parameters.",
                "additionalProperties": {"anyOf": [_SCALAR, {"type": "array", "items": _SCALAR}]},
            },
        },
        "required": ["query"],
        "additionalProperties": False,
    },
}


def validate_args(tool: str, args: Any) -> dict[str, Any]:
    """Check ``args`` against the tool's JSON Schema and its own rules; InvalidInput says what is wrong."""
    schema = TOOL_SCHEMAS.get(tool)
    if schema is None:
        raise InvalidInput(f"unknown tool {tool!r}; tools: {', '.join(sorted(TOOL_SCHEMAS))}")
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(args))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)
        raise InvalidInput(f"{where}: {error.message}" if where else error.message)
    for field in ("url", "endpoint"):
        if field in args:
            try:
                parts = urlsplit(args[field])
                usable = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
            except ValueError:
                usable = False
            if not usable:
                raise InvalidInput(f"{field} must be an http:// or https:// URL with a host")
    if tool == "execute_database_query":
        check_params(check_select(args["query"]), args.get("params") or {})
    return dict(args)


def scrape(url: str, *, settings: Settings, sessions: sessionmaker[Session]) -> dict[str, Any]:
    """``{url, title, content, length, cached}`` of the HTML page at ``url``."""
    return cached_call(
        sessions,
        "scrape_url",
        {"url": url},
        ttl=settings.cache_ttl_scrape,
        call=_guarded(
            sessions, url, settings, lambda: interruptible("scrape_url call", fetch_page, url, settings=settings)
        ),
    )


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
        call=_guarded(
            sessions,
            endpoint,
            settings,
            lambda: interruptible("call_external_api call", get_json, endpoint, params, settings=settings),
        ),
    )


def query_database(
    query: str,
    params: Mapping[str, Any] | None = None,
    *,
    settings: Settings,
    sessions: sessionmaker[Session],
    timeout_ms: int | None = None,
) -> dict[str, Any]:
    """``{status, count, data, truncated, cached}`` of one SELECT on the tools database.

    ``timeout_ms`` shortens the statement timeout (never lengthens it), e.g. to a task's remaining time.
    """
    args = {"query": query, "params": dict(params or {})}
    return cached_call(
        sessions,
        "execute_database_query",
        args,
        ttl=settings.cache_ttl_sql,
        call=lambda: _query_in_time(query, params, settings, timeout_ms),
    )


def _query_in_time(
    query: str, params: Mapping[str, Any] | None, settings: Settings, timeout_ms: int | None
) -> dict[str, Any]:
    """The SQL tool's query, its statement timeout cut to the running task's remaining time."""
    own = (
        settings.tools_statement_timeout_ms
        if timeout_ms is None
        else min(timeout_ms, settings.tools_statement_timeout_ms)
    )
    timeout_ms = max(1, int(call_timeout(own / 1000) * 1000))
    return interruptible(
        "execute_database_query call", run_query, query, params, settings=settings, timeout_ms=timeout_ms
    )


def run_tool(
    tool: str, args: Mapping[str, Any], *, settings: Settings, sessions: sessionmaker[Session]
) -> dict[str, Any]:
    """Validate ``args`` and run ``tool`` in this process (what the workflows and agents call)."""
    valid = validate_args(tool, args)
    if tool == "scrape_url":
        return scrape(valid["url"], settings=settings, sessions=sessions)
    if tool == "call_external_api":
        return call_api(valid["endpoint"], valid.get("params"), settings=settings, sessions=sessions)
    return query_database(valid["query"], valid.get("params"), settings=settings, sessions=sessions)


def _guarded(
    sessions: sessionmaker[Session], url: str, settings: Settings, call: Callable[[], dict[str, Any]]
) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        with guard(sessions, target_of(url), settings=settings):
            return call()

    return run


def _run(ctx: TaskContext, tool: str) -> dict[str, Any]:
    return run_tool(tool, ctx.input, settings=ctx.settings, sessions=ctx.runtime.sessions)


@workflow(
    "scrape_url",
    queue=TOOLS_QUEUE,
    submittable=False,
    max_retries=TOOL_MAX_RETRIES,
    time_limit=TOOL_TIME_LIMIT,
)
def scrape_url(ctx: TaskContext) -> dict[str, Any]:
    """Fetch an HTML page and return its title and readable text."""
    return _run(ctx, "scrape_url")


@workflow(
    "call_external_api",
    queue=TOOLS_QUEUE,
    submittable=False,
    max_retries=TOOL_MAX_RETRIES,
    time_limit=TOOL_TIME_LIMIT,
)
def call_external_api(ctx: TaskContext) -> dict[str, Any]:
    """GET a JSON API; 4xx fail at once, 429/5xx/network errors retry honouring Retry-After."""
    return _run(ctx, "call_external_api")


@workflow(
    "execute_database_query",
    queue=TOOLS_QUEUE,
    submittable=False,
    max_retries=TOOL_MAX_RETRIES,
    time_limit=TOOL_TIME_LIMIT,
)
def execute_database_query(ctx: TaskContext) -> dict[str, Any]:
    """Run one read-only SELECT with named parameters on the tools database."""
    return _run(ctx, "execute_database_query")
