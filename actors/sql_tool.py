"""The SQL tool: one read-only SELECT against the tools database, never with superuser rights.

Layers, each of which alone would stop a write:

1. The text is parsed by PostgreSQL's own parser (``pglast``): exactly one statement, a plain
   SELECT (or VALUES/TABLE/UNION of them), with no ``INTO``, no ``FOR UPDATE/SHARE``, no
   data-modifying CTE and none of a short list of functions with side effects outside the table
   data (files, other sessions, settings, advisory locks, dynamic SQL).
2. It runs in a ``READ ONLY`` transaction with a ``statement_timeout``, fetching at most
   ``INTERLOCK_TOOLS_MAX_ROWS`` rows through a server-side cursor, then rolls back.
3. It never runs as a superuser (a read-only transaction does not stop ``pg_read_file``): a
   superuser URL is refused unless ``INTERLOCK_TOOLS_DATABASE_ROLE`` names a non-superuser role
   to ``SET ROLE`` to. The best setup is a login role with SELECT on what agents may read.

Parameters are named (``:name``), given as a JSON object and bound by the driver, never formatted
into the text.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import logging
import math
import re
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pglast
from pglast import ast
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.elements import TextClause

from interlock.settings import Settings

from .errors import InvalidInput, PermanentError, TransientError

__all__ = ["QueryRefused", "check_select", "check_params", "run_query", "FORBIDDEN_FUNCTIONS"]

logger = logging.getLogger(__name__)

MAX_QUERY_CHARS = 20_000

#: Functions whose effects reach beyond reading table data; refused wherever they appear.
FORBIDDEN_FUNCTIONS = frozenset(
    {
        "set_config",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_stat_file",
        "pg_notify",
        "pg_switch_wal",
        "pg_create_restore_point",
        "pg_promote",
        "pg_logical_emit_message",
        "pg_file_write",
    }
)
FORBIDDEN_PREFIXES = (
    "pg_read_",
    "pg_ls_",
    "lo_",
    "dblink",
    "pg_advisory_",
    "pg_try_advisory_",
    "query_to_xml",
    "cursor_to_xml",
)

#: ``:name`` is checked as ``$1000000``, ``$1000001``...; lower numbers were written by the caller.
_OUR_PARAMS = 1_000_000

#: How SQLAlchemy's ``text()`` finds ``:name`` parameters; the check must see what will run.
_BIND = TextClause._bind_params_regex

_STATEMENT_NAMES = {
    "InsertStmt": "INSERT",
    "UpdateStmt": "UPDATE",
    "DeleteStmt": "DELETE",
    "MergeStmt": "MERGE",
    "DropStmt": "DROP",
    "TruncateStmt": "TRUNCATE",
    "CopyStmt": "COPY",
    "CallStmt": "CALL",
    "DoStmt": "DO",
    "VariableSetStmt": "SET",
    "ExplainStmt": "EXPLAIN",
    "CreateStmt": "CREATE TABLE",
    "CreateTableAsStmt": "CREATE TABLE AS",
    "AlterTableStmt": "ALTER TABLE",
    "GrantStmt": "GRANT",
    "TransactionStmt": "a transaction command",
    "LockStmt": "LOCK",
    "VacuumStmt": "VACUUM",
}


class QueryRefused(InvalidInput):
    """The query is not a single, side-effect-free SELECT."""


def check_select(query: str) -> list[str]:
    """Refuse anything but one plain SELECT; returns the ``:name`` parameters it uses."""
    if not isinstance(query, str) or not query.strip():
        raise QueryRefused("the query is empty")
    if len(query) > MAX_QUERY_CHARS:
        raise QueryRefused(f"the query is longer than {MAX_QUERY_CHARS} characters")
    names: list[str] = []

    def placeholder(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${_OUR_PARAMS + names.index(match.group(1))}"

    parseable = _BIND.sub(placeholder, query).replace("\\:", ":")
    try:
        statements = pglast.parse_sql(parseable)
    except pglast.parser.ParseError as exc:
        hint = " (write CAST(:name AS type), not :name::type)" if "::" in query else ""
        raise QueryRefused(f"the query is not valid SQL: {exc}{hint}") from exc
    if len(statements) != 1:
        raise QueryRefused(f"exactly one statement is allowed; the query has {len(statements)}")
    statement = statements[0].stmt
    if not isinstance(statement, ast.SelectStmt):
        kind = type(statement).__name__
        raise QueryRefused(f"only SELECT is allowed, not {_STATEMENT_NAMES.get(kind, kind)}")
    for node in _walk(statement):
        _refuse_node(node)
    return names


def _refuse_node(node: ast.Node) -> None:
    if isinstance(node, ast.IntoClause):
        raise QueryRefused("SELECT ... INTO creates a table; only plain SELECT is allowed")
    if isinstance(node, ast.LockingClause):
        raise QueryRefused("locking clauses (FOR UPDATE / FOR SHARE) are not allowed")
    if isinstance(node, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt | ast.MergeStmt):
        kind = _STATEMENT_NAMES[type(node).__name__]
        raise QueryRefused(f"data-modifying statements ({kind}) are not allowed, not even in a WITH clause")
    if isinstance(node, ast.ParamRef) and (node.number or 0) < _OUR_PARAMS:
        raise QueryRefused(f"positional parameters (${node.number}) are not supported; use :name")
    if isinstance(node, ast.FuncCall):
        name = str(getattr(node.funcname[-1], "sval", "")).lower() if node.funcname else ""
        if name in FORBIDDEN_FUNCTIONS or name.startswith(FORBIDDEN_PREFIXES):
            raise QueryRefused(f"the function {name}() is not allowed in tool queries")


def _walk(node: Any) -> Iterator[ast.Node]:
    """Every AST node below (and including) ``node``."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, ast.Node):
            yield item
            stack.extend(getattr(item, name, None) for name in getattr(type(item), "__slots__", ()))


def check_params(names: list[str], params: Mapping[str, Any]) -> dict[str, Any]:
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
    query: str, params: Mapping[str, Any] | None = None, *, settings: Settings, timeout_ms: int | None = None
) -> dict[str, Any]:
    """``{status, count, data, truncated}``: the rows of one checked SELECT on the tools database.

    ``timeout_ms`` (default ``INTERLOCK_TOOLS_STATEMENT_TIMEOUT_MS``) bounds the statement; a task
    passes its remaining time when that is shorter.
    """
    names = check_select(query)
    values = check_params(names, params or {})
    url = _tools_url(settings.tools_database_url)
    engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 10})
    try:
        with engine.connect() as connection:
            transaction = connection.begin()
            try:
                _restrict(connection, settings, timeout_ms)
                result = connection.execution_options(
                    stream_results=True, max_row_buffer=settings.tools_max_rows + 1
                ).execute(text(query), values)
                columns = list(result.keys())
                rows = result.fetchmany(settings.tools_max_rows + 1)
                result.close()
            finally:
                transaction.rollback()
    except DBAPIError as exc:
        raise _translate(exc, settings) from exc
    except SQLAlchemyError as exc:
        raise PermanentError(f"the query could not run: {exc}") from exc
    finally:
        engine.dispose()
    truncated = len(rows) > settings.tools_max_rows
    data = [{c: _jsonable(v) for c, v in zip(columns, row, strict=True)} for row in rows[: settings.tools_max_rows]]
    return {"status": "success", "count": len(data), "data": data, "truncated": truncated}


def _tools_url(url: str) -> str:
    if not url:
        raise PermanentError(
            "the SQL tool is disabled: INTERLOCK_TOOLS_DATABASE_URL names no database "
            "(it never uses Interlock's own database unless told to)"
        )
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if url.startswith("postgresql+"):
        return url
    raise PermanentError("INTERLOCK_TOOLS_DATABASE_URL must be a postgresql:// URL")


def _restrict(connection: Connection, settings: Settings, timeout_ms: int | None = None) -> None:
    """Read-only, time-limited and not a superuser, for this transaction only."""
    connection.execute(text("SET TRANSACTION READ ONLY"))
    timeout_ms = max(1, int(timeout_ms or settings.tools_statement_timeout_ms))
    connection.execute(text(f"SET LOCAL statement_timeout = {timeout_ms}"))
    is_superuser = text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    role = settings.tools_database_role.strip()
    if role:
        quoted = connection.dialect.identifier_preparer.quote_identifier(role)
        connection.execute(text(f"SET LOCAL ROLE {quoted}"))
        if connection.execute(is_superuser).scalar():
            raise PermanentError(
                f"INTERLOCK_TOOLS_DATABASE_ROLE {role!r} is a superuser; the SQL tool needs a restricted role"
            )
    elif connection.execute(is_superuser).scalar():
        raise PermanentError(
            "INTERLOCK_TOOLS_DATABASE_URL logs in as a superuser, which a read-only transaction does not "
            "restrict; use a role without superuser rights or name one in INTERLOCK_TOOLS_DATABASE_ROLE"
        )


def _translate(exc: DBAPIError, settings: Settings) -> InvalidInput | PermanentError | TransientError:
    sqlstate = getattr(exc.orig, "sqlstate", None) or ""
    detail = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    if sqlstate == "57014":  # query_canceled: the statement timeout fired
        return PermanentError(
            f"the query was stopped by the statement timeout of {settings.tools_statement_timeout_ms} ms "
            "(INTERLOCK_TOOLS_STATEMENT_TIMEOUT_MS)"
        )
    if sqlstate.startswith(("08", "53", "57P")) or exc.connection_invalidated or not sqlstate:
        # connection failures, insufficient resources, server shutting down
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
