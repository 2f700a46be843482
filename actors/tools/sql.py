"""The SQL tool: one checked SELECT on the tools database, read-only, never as a superuser.

Layers, each of which alone would stop a write or a read of the server's files:

1. The guard (:mod:`actors.tools.sql_guard`): one plain SELECT that calls only PostgreSQL's own
   side-effect-free functions and operators (an allowlist), run as the checked tree printed back
   with every call qualified with ``pg_catalog``.
2. It runs in a ``READ ONLY`` transaction with a ``statement_timeout``; rows are streamed one at a
   time and reading stops at ``INTERLOCK_TOOLS_MAX_ROWS`` rows or ``INTERLOCK_TOOLS_MAX_RESULT_BYTES``
   bytes of JSON (``truncated: true``), so a huge result is never held in memory nor cached.
3. The login itself must be restricted: a session user that is a superuser, or a member of a
   superuser role or of the roles that read and write the server's files, is refused before
   anything runs. ``SET ROLE`` cannot make such a login safe (a session can always undo it), so
   ``INTERLOCK_TOOLS_DATABASE_ROLE`` only narrows a restricted login further.

Parameters are named (``:name``), given as a JSON object and bound by the server, never formatted
into the text.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import logging
import math
import uuid
from collections.abc import Generator, Mapping
from typing import Any, cast

import psycopg
from psycopg import sql
from sqlalchemy.orm import Session, sessionmaker

from actors.errors import InvalidInput, PermanentError, QueryRefused, TransientError
from actors.running import call_timeout, interruptible
from actors.tools.cache import cached_call
from actors.tools.catalogue import SCALAR_SCHEMA, tool
from actors.tools.sql_allowlist import ALLOWED_FUNCTIONS
from actors.tools.sql_guard import CheckedQuery, check_select, compile_select
from interlock.settings import Settings

__all__ = [
    "execute_database_query",
    "query_database",
    "check_select",
    "check_params",
    "run_query",
]

logger = logging.getLogger(__name__)

#: Roles whose members read or write the server's files or run programs on it.
_SERVER_FILE_ROLES = ("pg_read_server_files", "pg_write_server_files", "pg_execute_server_program")

#: Pseudo-types of an argument that a table's row can be passed as, in ``x.name`` (attribute notation).
_ROW_PSEUDO_TYPES = ("record", "any", "anyelement", "anynonarray", "anycompatible", "anycompatiblenonarray")

#: One round trip before the query: who logs in, what it may become, which functions ``x.name``
#: could call, and this transaction's limits.
_SETUP = """
SELECT session_user::text,
       (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = session_user),
       ARRAY(SELECT r.rolname::text FROM pg_catalog.pg_roles r
             WHERE pg_catalog.pg_has_role(session_user, r.oid, 'MEMBER')
               AND (r.rolsuper OR r.rolname = ANY(%(file_roles)s))
             ORDER BY r.rolname),
       ARRAY(SELECT DISTINCT n.nspname || '.' || p.proname
             FROM pg_catalog.pg_proc p
             JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
             JOIN pg_catalog.pg_type t ON t.oid = p.proargtypes[0]
             WHERE p.proname = ANY(%(attributes)s) AND p.pronargs >= 1
               AND p.pronargs - p.pronargdefaults <= 1
               AND (t.typtype IN ('c', 'd') OR t.typname = ANY(%(row_types)s))),
       pg_catalog.set_config('statement_timeout', %(timeout)s, true),
       pg_catalog.set_config('search_path', pg_catalog.concat_ws(', ', 'pg_catalog',
                             NULLIF(pg_catalog.current_setting('search_path'), '')), true)
"""


def _check_query(args: dict[str, Any]) -> None:
    check_params(check_select(args["query"]), args.get("params") or {})


@tool(
    "execute_database_query",
    schema={
        "type": "object",
        "title": "execute_database_query",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 20_000, "description": "One SELECT."},
            "params": {
                "type": "object",
                "description": "Values of the query's :name parameters.",
                "additionalProperties": {"anyOf": [SCALAR_SCHEMA, {"type": "array", "items": SCALAR_SCHEMA}]},
            },
        },
        "required": ["query"],
        "additionalProperties": False,
    },
    check=_check_query,
)
def execute_database_query(
    args: dict[str, Any], *, settings: Settings, sessions: sessionmaker[Session]
) -> dict[str, Any]:
    """Run one read-only SELECT with named parameters on the tools database."""
    return query_database(args["query"], args.get("params"), settings=settings, sessions=sessions)


def query_database(
    query: str,
    params: Mapping[str, Any] | None = None,
    *,
    settings: Settings,
    sessions: sessionmaker[Session],
    timeout_ms: int | None = None,
) -> dict[str, Any]:
    """``{status, count, data, truncated, cached}`` of one SELECT on the tools database, cached.

    Within a task the query runs in a helper thread that the task's time limit or cancellation stops
    waiting for, its statement timeout cut to the task's remaining time. ``timeout_ms`` shortens the
    statement timeout (never lengthens it), e.g. to a task's remaining time.
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


def check_params(names: list[str], params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameter values, if they are exactly the query's ``:name`` parameters and scalars (or lists)."""
    if not isinstance(params, Mapping):
        raise InvalidInput("params must be a JSON object of named parameters")
    missing = [n for n in names if n not in params]
    if missing:
        raise InvalidInput(f"the query uses :{', :'.join(missing)} but params does not give a value")
    unused = sorted(set(params) - set(names))
    if unused:
        raise InvalidInput(f"params gives {', '.join(unused)} which the query does not use")
    for key, value in params.items():
        scalar = (str, int, float, bool, type(None))
        if not isinstance(value, scalar) and not (
            isinstance(value, list) and all(isinstance(v, scalar) for v in value)
        ):
            raise InvalidInput(f"parameter {key!r} must be a string, number, boolean, null or a list of those")
    return dict(params)


def run_query(
    query: str,
    params: Mapping[str, Any] | None = None,
    *,
    settings: Settings,
    timeout_ms: int | None = None,
) -> dict[str, Any]:
    """``{status, count, data, truncated}``: the rows of one checked SELECT on the tools database.

    ``timeout_ms`` shortens ``INTERLOCK_TOOLS_STATEMENT_TIMEOUT_MS`` (e.g. to a task's remaining time).
    """
    checked = compile_select(query)
    values = check_params(checked.names, params or {})
    conninfo = _conninfo(settings.tools_database_url)
    configured = max(1, int(settings.tools_statement_timeout_ms))
    limit_ms = configured if timeout_ms is None else max(1, min(configured, int(timeout_ms)))
    source = "INTERLOCK_TOOLS_STATEMENT_TIMEOUT_MS" if limit_ms == configured else "the task's remaining time"
    try:
        connection = psycopg.connect(conninfo, connect_timeout=max(2, min(10, math.ceil(limit_ms / 1000))))
    except psycopg.Error as exc:
        raise _translate(exc, f"{limit_ms} ms ({source})") from exc
    try:
        connection.read_only = True  # the transaction begins READ ONLY
        _restrict(connection, checked, settings, limit_ms)
        return _read(connection, checked, values, settings)
    except psycopg.Error as exc:
        raise _translate(exc, f"{limit_ms} ms ({source})") from exc
    finally:
        connection.close()  # rolls the transaction back


def _conninfo(url: str) -> str:
    if not url:
        raise PermanentError(
            "the SQL tool is disabled: INTERLOCK_TOOLS_DATABASE_URL names no database "
            "(it never uses Interlock's own database unless told to)"
        )
    scheme, separator, rest = url.partition("://")
    if separator and scheme.split("+", 1)[0] in ("postgresql", "postgres"):
        return f"postgresql://{rest}"
    raise PermanentError("INTERLOCK_TOOLS_DATABASE_URL must be a postgresql:// URL")


def _restrict(connection: psycopg.Connection[Any], checked: CheckedQuery, settings: Settings, limit_ms: int) -> None:
    """Refuse a login that is or may become a superuser, and functions hiding as ``x.name``; set limits and role."""
    setup = {
        "file_roles": list(_SERVER_FILE_ROLES),
        "attributes": sorted(checked.attributes),
        "row_types": list(_ROW_PSEUDO_TYPES),
        "timeout": str(limit_ms),
    }
    with connection.cursor() as cursor:
        cursor.execute(_SETUP, setup)
        login, superuser, powers, functions, _, _ = cursor.fetchone() or ("", True, [], [], None, None)
        if superuser or powers:
            what = "a superuser" if superuser else f"a member of {', '.join(powers)}"
            raise PermanentError(
                f"INTERLOCK_TOOLS_DATABASE_URL logs in as {login!r}, {what}: the SQL tool refuses a login that "
                "is or may become a superuser or read the server's files, whatever INTERLOCK_TOOLS_DATABASE_ROLE "
                "says (a session can undo SET ROLE). Log in as a role without these rights that may only "
                "SELECT what agents may read"
            )
        for function in functions:
            schema, _, name = function.partition(".")
            if schema != "pg_catalog" or name not in ALLOWED_FUNCTIONS:
                raise QueryRefused(
                    f"the function {function}() is not allowed in tool queries, and x.{name} may call it "
                    f"(attribute notation); if {name} is a column, write it without the x. prefix"
                )
        role = settings.tools_database_role.strip()
        if role:
            cursor.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))


def _read(
    connection: psycopg.Connection[Any], checked: CheckedQuery, values: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    """Stream the rows; stop before the row that passes the row or byte cap."""
    max_rows, max_bytes = settings.tools_max_rows, settings.tools_max_result_bytes
    data: list[dict[str, Any]] = []
    size = 2  # the brackets of the JSON array
    truncated = False
    cursor = psycopg.RawCursor(connection)
    rows = cast(Generator[Any, None, None], cursor.stream(checked.sql, [values[name] for name in checked.names]))
    try:
        columns: list[str] | None = None
        for row in rows:
            if len(data) >= max_rows:
                truncated = True
                break
            if columns is None:
                columns = [column.name for column in cursor.description or ()]
            item = {c: _jsonable(v) for c, v in zip(columns, row, strict=True)}
            cost = len(json.dumps(item, ensure_ascii=False).encode()) + 2  # and the ", " before it
            if size + cost > max_bytes:
                truncated = True
                break
            data.append(item)
            size += cost
    finally:
        rows.close()  # a stream left early is cancelled on the server, not read to its end
    return {"status": "success", "count": len(data), "data": data, "truncated": truncated}


def _translate(exc: psycopg.Error, timeout: str) -> InvalidInput | PermanentError | TransientError:
    sqlstate = exc.sqlstate or ""
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if sqlstate == "57014":  # query_canceled: the statement timeout fired
        return PermanentError(f"the query was stopped by the statement timeout of {timeout}")
    if sqlstate.startswith(("08", "40", "53", "57P")) or not sqlstate:
        # connection failures, serialisation failures, insufficient resources, server shutting down
        return TransientError(f"the tools database is unavailable: {detail}")
    if sqlstate == "25006":  # read_only_sql_transaction
        return PermanentError(f"the query tried to write in a read-only transaction: {detail}")
    if sqlstate == "42501":
        return PermanentError(f"the tools role may not do this: {detail}")
    return InvalidInput(f"the query failed: {detail}")


def _jsonable(value: Any) -> Any:
    """A result cell as JSON: numbers stay numbers, times become ISO 8601, bytes base64."""
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # JSON has no NaN or Infinity
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return str(value)
        return int(value) if value == value.to_integral_value() and abs(value) < 2**53 else float(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)
