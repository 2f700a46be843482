"""The SQL tool's guard: one plain SELECT, and only what it is known to be safe to call.

The text is parsed by PostgreSQL's own parser (``pglast``) and the whole tree is walked. Every
node must be of a kind a plain SELECT is made of; anything else (a statement, ``INTO``,
``FOR UPDATE``, XML, SQL/JSON syntax, a kind this module does not know) is refused, so a new
grammar feature fails closed. Functions, operators, casts, ``TABLESAMPLE`` methods and system
relations are checked against allowlists of PostgreSQL's own, side-effect-free ones
(``actors.tools.sql_allowlist``): nothing that evaluates SQL text handed to it (``ts_stat``,
``query_to_xml``...), reads files, settings or other sessions, takes locks, touches sequences or
sleeps. A function of any schema but ``pg_catalog``
is refused (its owner's code may do anything). ``x.name`` calls a function ``name(x)`` when ``x``
has no column ``name`` (attribute notation), which only the database can tell: such names are
handed to the tool (``CheckedQuery.attributes``), which asks the database before running.

What runs is not the caller's text but the checked tree printed back, with every function call,
cast and explicit operator qualified with ``pg_catalog`` (so an overload in another schema cannot
be picked) and the ``:name`` parameters numbered ``$1``...; the printed text is parsed again and
must give the same tree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pglast
from pglast import ast, enums
from pglast.stream import RawStream

from actors.errors import QueryRefused
from actors.tools.sql_allowlist import (
    ALLOWED_CATALOG_RELATIONS,
    ALLOWED_FUNCTIONS,
    ALLOWED_OPERATORS,
    ALLOWED_TYPES,
    PLAIN_NODES,
    REFUSED_NODE_NAMES,
    STATEMENT_NAMES,
    TABLESAMPLE_METHODS,
)

__all__ = [
    "CheckedQuery",
    "MAX_QUERY_CHARS",
    "check_select",
    "compile_select",
]

MAX_QUERY_CHARS = 20_000

#: ``:name`` is checked as ``$1000000``, ``$1000001``...; what runs numbers them ``$1``, ``$2``...
_OUR_PARAMS = 1_000_000

#: SQLAlchemy's ``:name`` syntax, looked for only outside literals, quoted names and comments.
_BIND = re.compile(r"(?<![:\w\x5c]):(\w+)(?!:)", re.UNICODE)
_OPAQUE_TOKENS = frozenset({"SCONST", "USCONST", "BCONST", "XCONST", "UIDENT", "SQL_COMMENT", "C_COMMENT"})

#: Positions in the text and whether a call was written as SQL syntax (``TRIM(BOTH x FROM y)``)
#: or as the function it stands for (``pg_catalog.btrim(y, x)``): neither changes what runs.
_POSITIONAL = re.compile(r"(location|_start|_end|stmt_len|^funcformat)$")


@dataclass(frozen=True)
class CheckedQuery:
    """A query that passed the guard: ``sql`` is what runs, with ``$1``... for ``names``."""

    sql: str
    names: list[str]
    #: Names written as ``x.name`` or ``(x).name``: a column or field, or else a call of a function
    #: ``name(x)`` (attribute notation), which only the database can tell; the tool asks it.
    attributes: frozenset[str] = frozenset()


def check_select(query: str) -> list[str]:
    """Refuse anything but one plain, side-effect-free SELECT; returns the ``:name`` parameters it uses."""
    return compile_select(query).names


def compile_select(query: str) -> CheckedQuery:
    """Check ``query`` and print it back qualified and numbered, ready to run; QueryRefused says why not."""
    try:
        return _compile(query)
    except RecursionError as exc:  # the printer and the comparison recurse once per level of nesting
        raise QueryRefused("the query is nested too deeply; write it more simply") from exc


def _compile(query: str) -> CheckedQuery:
    if not isinstance(query, str) or not query.strip():
        raise QueryRefused("the query is empty")
    if len(query) > MAX_QUERY_CHARS:
        raise QueryRefused(f"the query is longer than {MAX_QUERY_CHARS} characters")
    parseable, names = _number_names(query)
    statement = _one_select(parseable, hint=" (write CAST(:name AS type), not :name::type)" if "::" in query else "")
    guard = _Guard(range(_OUR_PARAMS, _OUR_PARAMS + len(names)))
    guard.check(statement)
    used = sorted({int(node.number or 0) for node in _walk(statement) if isinstance(node, ast.ParamRef)})
    names = [names[number - _OUR_PARAMS] for number in used]
    renumber = {number: index + 1 for index, number in enumerate(used)}

    _qualify(statement, renumber)
    sql = RawStream()(statement)
    printed = _one_select(sql, hint="")
    if _shape(printed) != _shape(statement):  # pragma: no cover - a printer bug must not change the query
        raise QueryRefused("the query could not be checked reliably; write it more simply")
    _Guard(range(1, len(names) + 1)).check(printed)
    return CheckedQuery(sql=sql, names=names, attributes=frozenset(guard.attributes))


def _number_names(query: str) -> tuple[str, list[str]]:
    """``:name`` → ``$1000000``..., outside string literals, quoted identifiers and comments."""
    try:
        tokens = pglast.parser.scan(query)
    except pglast.parser.ParseError as exc:
        raise QueryRefused(f"the query is not valid SQL: {exc}") from exc
    opaque = []
    for token in tokens:
        if token.name == "PARAM":
            text = query[token.start : token.end + 1]
            raise QueryRefused(f"positional parameters ({text}) are not supported; use :name")
        if token.name in _OPAQUE_TOKENS or (token.name == "IDENT" and query[token.start] == '"'):
            opaque.append((token.start, token.end))
    names: list[str] = []
    pieces: list[str] = []
    done = 0
    for match in _BIND.finditer(query):
        if any(start <= match.start() <= end for start, end in opaque):
            continue
        if match.group(1) not in names:
            names.append(match.group(1))
        pieces += [query[done : match.start()], f"${_OUR_PARAMS + names.index(match.group(1))}"]
        done = match.end()
    pieces.append(query[done:])
    return "".join(pieces), names


def _one_select(text: str, *, hint: str) -> ast.SelectStmt:
    try:
        statements = pglast.parse_sql(text)
    except pglast.parser.ParseError as exc:
        raise QueryRefused(f"the query is not valid SQL: {exc}{hint}") from exc
    if len(statements) != 1:
        raise QueryRefused(f"exactly one statement is allowed; the query has {len(statements)}")
    statement = statements[0].stmt
    if not isinstance(statement, ast.SelectStmt):
        kind = type(statement).__name__
        raise QueryRefused(f"only SELECT is allowed, not {STATEMENT_NAMES.get(kind, kind)}")
    return statement


class _Guard:
    """Walks a tree and raises QueryRefused at the first node that is not allowed."""

    def __init__(self, params: range) -> None:
        self.params = params
        self.attributes: set[str] = set()
        self.checks: dict[type[ast.Node], Callable[[Any], None]] = {
            ast.CommonTableExpr: self._cte,
            ast.FuncCall: self._function,
            ast.A_Expr: self._expression,
            ast.SubLink: self._sublink,
            ast.SortBy: self._sort,
            ast.TypeName: self._type,
            ast.ColumnDef: self._column_definition,
            ast.ColumnRef: self._column,
            ast.A_Indirection: self._indirection,
            ast.RangeVar: self._relation,
            ast.RangeTableSample: self._tablesample,
            ast.ParamRef: self._param,
            ast.IntoClause: self._refuse("SELECT ... INTO creates a table; only plain SELECT is allowed"),
            ast.LockingClause: self._refuse("locking clauses (FOR UPDATE / FOR SHARE) are not allowed"),
        }
        for kind in PLAIN_NODES:
            self.checks[kind] = lambda node: None

    def check(self, tree: ast.Node) -> None:
        for node in _walk(tree):
            check = self.checks.get(type(node))
            if check is None:
                raise QueryRefused(_why_refused(node))
            check(node)

    @staticmethod
    def _refuse(message: str) -> Callable[[Any], None]:
        def refuse(node: Any) -> None:
            raise QueryRefused(message)

        return refuse

    def _cte(self, node: ast.CommonTableExpr) -> None:
        if not isinstance(node.ctequery, ast.SelectStmt):
            kind = type(node.ctequery).__name__
            raise QueryRefused(
                f"data-modifying statements ({STATEMENT_NAMES.get(kind, kind)}) are not allowed, "
                "not even in a WITH clause"
            )

    def _function(self, node: ast.FuncCall) -> None:
        schema, name = _split(node.funcname)
        shown = f"{schema}.{name}" if schema else name
        if schema not in (None, "pg_catalog"):
            raise QueryRefused(f"the function {shown}() is not allowed: only PostgreSQL's own functions are")
        if name not in ALLOWED_FUNCTIONS:
            raise QueryRefused(f"the function {shown}() is not allowed in tool queries")

    def _expression(self, node: ast.A_Expr) -> None:
        schema, name = _split(node.name)
        if schema not in (None, "pg_catalog"):
            raise QueryRefused(f"the operator {schema}.{name} is not allowed: only PostgreSQL's own operators are")
        kind = enums.A_Expr_Kind
        if node.kind in (
            kind.AEXPR_BETWEEN,
            kind.AEXPR_NOT_BETWEEN,
            kind.AEXPR_BETWEEN_SYM,
            kind.AEXPR_NOT_BETWEEN_SYM,
        ):
            return  # the name is the keyword; the comparisons are PostgreSQL's own <= and >=
        if name not in ALLOWED_OPERATORS:
            raise QueryRefused(f"the operator {name} is not allowed in tool queries")

    def _sublink(self, node: ast.SubLink) -> None:
        if node.operName:
            schema, name = _split(node.operName)
            if schema not in (None, "pg_catalog") or name not in ALLOWED_OPERATORS:
                raise QueryRefused(f"the operator {name} is not allowed in tool queries")

    def _sort(self, node: ast.SortBy) -> None:
        if node.useOp:
            raise QueryRefused("ORDER BY ... USING is not allowed; use ASC or DESC")

    def _type(self, node: ast.TypeName) -> None:
        if node.setof or node.pct_type or not node.names:
            raise QueryRefused("%TYPE and SETOF are not allowed in tool queries")
        schema, name = _split(node.names)
        shown = f"{schema}.{name}" if schema else name
        if schema not in (None, "pg_catalog") or name not in ALLOWED_TYPES:
            raise QueryRefused(f"casts to the type {shown} are not allowed in tool queries")

    def _column(self, node: ast.ColumnRef) -> None:
        fields = node.fields or ()
        if len(fields) >= 2 and isinstance(fields[-1], ast.String) and fields[-1].sval:
            self.attributes.add(fields[-1].sval)

    def _indirection(self, node: ast.A_Indirection) -> None:
        self.attributes.update(
            part.sval for part in node.indirection or () if isinstance(part, ast.String) and part.sval
        )

    def _column_definition(self, node: ast.ColumnDef) -> None:
        if node.constraints or node.raw_default is not None or node.cooked_default is not None:
            raise QueryRefused("column definitions in FROM may name a type only")

    def _relation(self, node: ast.RangeVar) -> None:
        schema, name = node.schemaname, node.relname or ""
        if node.catalogname is not None:
            raise QueryRefused("cross-database references are not allowed")
        if (schema == "pg_catalog" or (schema is None and name.startswith("pg_"))) and (
            name not in ALLOWED_CATALOG_RELATIONS
        ):
            raise QueryRefused(
                f"the system relation {name} is not allowed in tool queries; "
                f"allowed: {', '.join(sorted(ALLOWED_CATALOG_RELATIONS))} and information_schema"
            )

    def _tablesample(self, node: ast.RangeTableSample) -> None:
        schema, name = _split(node.method)
        if schema not in (None, "pg_catalog") or name not in TABLESAMPLE_METHODS:
            raise QueryRefused(f"TABLESAMPLE {name} is not allowed; use SYSTEM or BERNOULLI")

    def _param(self, node: ast.ParamRef) -> None:
        if node.number not in self.params:
            raise QueryRefused(f"positional parameters (${node.number}) are not supported; use :name")


def _split(names: tuple[Any, ...] | None) -> tuple[str | None, str]:
    """``(schema or None, name)`` of a possibly qualified name; more than two parts is refused."""
    parts = [getattr(part, "sval", None) for part in names or ()]
    strings = [part for part in parts if isinstance(part, str)]
    if not strings or len(strings) > 2 or len(strings) != len(parts):
        raise QueryRefused(f"the name {'.'.join(str(p) for p in parts)} is not allowed in tool queries")
    return (strings[0], strings[1]) if len(strings) == 2 else (None, strings[0])


def _why_refused(node: ast.Node) -> str:
    """Why a node of this kind is refused, as the caller reads it."""
    kind = type(node).__name__
    if kind in STATEMENT_NAMES:
        return f"data-modifying statements ({STATEMENT_NAMES[kind]}) are not allowed, not even in a WITH clause"
    if kind.startswith("Json"):
        return "SQL/JSON syntax (JSON_OBJECT, IS JSON, JSON_TABLE...) is not allowed; use the json functions"
    return f"{REFUSED_NODE_NAMES.get(kind, kind + ' is')} not allowed in tool queries"


def _walk(node: Any) -> Iterator[ast.Node]:
    """Every AST node below (and including) ``node``, whatever attribute holds it."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, tuple | list):
            stack.extend(item)
        elif isinstance(item, ast.Node):
            yield item
            stack.extend(getattr(item, name) for name in item)


def _qualify(tree: ast.Node, renumber: dict[int, int]) -> None:
    """Qualify functions, casts and explicit operators with ``pg_catalog``; number parameters from 1."""
    catalog = ast.String(sval="pg_catalog")
    operators = (enums.A_Expr_Kind.AEXPR_OP, enums.A_Expr_Kind.AEXPR_OP_ANY, enums.A_Expr_Kind.AEXPR_OP_ALL)
    for node in _walk(tree):
        if isinstance(node, ast.FuncCall) and len(node.funcname or ()) == 1:
            node.funcname = (catalog, *(node.funcname or ()))
        elif isinstance(node, ast.TypeName) and len(node.names or ()) == 1:
            node.names = (catalog, *(node.names or ()))
        elif isinstance(node, ast.A_Expr) and node.kind in operators and len(node.name or ()) == 1:
            node.name = (catalog, *(node.name or ()))
        elif isinstance(node, ast.SubLink) and len(node.operName or ()) == 1:
            node.operName = (catalog, *(node.operName or ()))
        elif isinstance(node, ast.ParamRef):
            node.number = renumber[int(node.number or 0)]


def _shape(node: Any) -> Any:
    """A node as plain data without positions in the text, to compare two parses."""
    if isinstance(node, ast.Node):
        node = node()
    if isinstance(node, dict):
        return {key: _shape(value) for key, value in node.items() if not _POSITIONAL.search(key)}
    if isinstance(node, tuple | list):
        return [_shape(item) for item in node]
    return node
