"""Tools end to end: POST /tools/{name} -> RabbitMQ -> worker -> PostgreSQL, against loopback servers.

The outside world is a threaded web server on 127.0.0.1 (testkit/fakes/http_server.py); the tools
database is a scratch PostgreSQL database with a restricted login role, made and dropped here.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import make_url

from actors.catalogue import discover
from actors.errors import PermanentError, QueryRefused
from actors.runtime import Runtime
from actors.submit import submit
from actors.tools.circuit_breaker import breaker_states
from actors.tools.sql import run_query
from interlock.cli.worker import start_worker
from interlock.settings import Settings
from models.base import utcnow
from models.breakers import CircuitBreaker, admit_call, record_failure, record_success
from models.tasks import Task
from models.tool_cache import ToolCacheEntry, get_cached, purge_expired_cache, store_cached
from testkit.fakes.http_server import FakeWebServer
from tests.services import admin_sql, database_url
from tests.stack import MakeStack, Stack
from tests.support import events, wait_for_state, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


@dataclass(frozen=True)
class ToolsDatabase:
    name: str
    role: str
    superuser_url: str
    restricted_url: str
    narrow: str  # a role the restricted login may SET ROLE to, with fewer rights
    sneaky_url: str  # a login that is no superuser itself but a member of a superuser role
    admin: str


@pytest.fixture(scope="module")
def tools_db() -> Iterator[ToolsDatabase]:
    """A database for the SQL tool: ten items, and a login role that may only SELECT them."""
    suffix = uuid.uuid4().hex[:8]
    name, role = f"interlock_tools_{suffix}", f"interlock_tools_reader_{suffix}"
    narrow, sneaky, admin = (f"interlock_tools_{kind}_{suffix}" for kind in ("narrow", "sneaky", "admin"))
    admin_sql(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE')
    admin_sql(f'CREATE ROLE "{narrow}" NOLOGIN')
    admin_sql(f'GRANT "{narrow}" TO "{role}"')
    admin_sql(f'CREATE ROLE "{admin}" NOLOGIN SUPERUSER')
    admin_sql(f'CREATE ROLE "{sneaky}" LOGIN NOSUPERUSER IN ROLE "{admin}"')
    admin_sql(f'CREATE DATABASE "{name}"')
    superuser_url = database_url(name)
    with psycopg.connect(superuser_url, autocommit=True) as connection:
        connection.execute(
            "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL, price numeric(10, 2) NOT NULL, "
            "added date NOT NULL)"
        )
        connection.execute(
            "INSERT INTO items SELECT i, 'item ' || i, i * 1.5, date '2026-01-01' + i FROM generate_series(1, 10) i"
        )
        connection.execute("CREATE SEQUENCE counter")
        connection.execute("CREATE TABLE secrets (token text)")
        connection.execute("CREATE TABLE notes AS SELECT 'for the reader only' AS note")
        # Views run what the parser cannot see: they show the transaction's limits and try a write.
        connection.execute(
            "CREATE VIEW limits AS SELECT current_setting('transaction_read_only') AS read_only, "
            "current_setting('statement_timeout') AS timeout, current_setting('search_path') AS search_path"
        )
        connection.execute("CREATE VIEW bump AS SELECT nextval('counter') AS n")
        # The owner's own code, which items.leak would call (attribute notation) if nothing stopped it.
        connection.execute("CREATE FUNCTION leak(items) RETURNS text LANGUAGE sql AS $$ SELECT 'owner code ran' $$")
        connection.execute(f'GRANT SELECT ON items, notes, limits, bump TO "{role}"')
        connection.execute(f'GRANT SELECT ON items TO "{narrow}"')
        connection.execute(f'GRANT USAGE, UPDATE ON SEQUENCE counter TO "{role}"')
    restricted_url = make_url(superuser_url).set(username=role).render_as_string(hide_password=False)
    sneaky_url = make_url(superuser_url).set(username=sneaky).render_as_string(hide_password=False)
    yield ToolsDatabase(name, role, superuser_url, restricted_url, narrow, sneaky_url, admin)
    admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    for each in (sneaky, admin, role, narrow):
        admin_sql(f'DROP ROLE IF EXISTS "{each}"')


@pytest.fixture
def web() -> Iterator[FakeWebServer]:
    with FakeWebServer() as server:
        yield server


@pytest.fixture
def tool_settings(settings: Settings, tools_db: ToolsDatabase) -> Settings:
    """The loopback test servers are allowed; short timeouts, small caps, a quick breaker."""
    _clear_tool_tables(settings)
    return settings.replace(
        rate_limits="",  # the tools queue's default start limit is tested with the rate limits
        tools_allow_hosts="127.0.0.1",
        tools_database_url=tools_db.restricted_url,
        http_timeout=2.0,
        scrape_max_bytes=20_000,
        tools_statement_timeout_ms=500,
        tools_max_rows=5,
        tools_max_result_bytes=100_000,
        breaker_threshold=3,
        breaker_reset=2.0,
        min_backoff=0.1,
        max_backoff=0.3,
        # Fast failures on an open breaker count as starts: leave room for a lost probe race.
        max_deliveries=10,
    )


@pytest.fixture
def tool_stack(tool_settings: Settings, make_stack: MakeStack) -> Stack:
    return make_stack(tool_settings)


def _clear_tool_tables(settings: Settings) -> None:
    runtime = Runtime.open(settings)
    try:
        with runtime.sessions.begin() as session:
            session.execute(delete(ToolCacheEntry))
            session.execute(delete(CircuitBreaker))
    finally:
        runtime.close()


def _post(stack: Stack, tool: str, body: Any, *, priority: str | None = None) -> Any:
    query = f"?priority={priority}" if priority else ""
    return stack.client.simulate_post(f"/tools/{tool}{query}", json=body)


def _run(stack: Stack, tool: str, body: dict[str, Any], *, priority: str | None = None) -> str:
    response = _post(stack, tool, body, priority=priority)
    assert response.status_code == 202, response.text
    return str(response.json["task_id"])


def _task_count(stack: Stack) -> int:
    with stack.runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(Task)) or 0


def _errors(stack: Stack, task_id: str, state: str = "RETRY") -> list[str]:
    return [str((e.data or {}).get("error")) for e in events(stack.runtime.sessions, task_id) if e.state == state]


# -- the API ----------------------------------------------------------------------------------

BAD_REQUESTS = [
    ("scrape_url", {}, "'url' is a required property"),
    ("scrape_url", {"url": 5}, "url: 5 is not of type 'string'"),
    ("scrape_url", {"url": "ftp://example.com/x"}, "http:// or https://"),
    ("scrape_url", {"url": "http://[::1/x"}, "http:// or https://"),
    ("scrape_url", {"url": "http://example.com", "depth": 3}, "Additional properties"),
    ("call_external_api", {"endpoint": "https://example.com", "params": {"a": {"b": 1}}}, "params/a"),
    ("execute_database_query", {"query": "DELETE FROM items"}, "only SELECT is allowed, not DELETE"),
    ("execute_database_query", {"query": "DROP TABLE items"}, "not DROP"),
    ("execute_database_query", {"query": "SELECT 1; DELETE FROM items"}, "exactly one statement"),
    (
        "execute_database_query",
        {"query": "SELECT * FROM items WHERE name = '" + "x'; DROP TABLE items; --" + "'"},
        "exactly one statement",
    ),
    ("execute_database_query", {"query": "SELECT * FROM items WHERE id = :id"}, ":id"),
    ("execute_database_query", {"query": "SELECT * FROM pg_settings"}, "system relation pg_settings"),
]


def test_bad_tool_requests_are_refused_and_nothing_is_stored(tool_stack: Stack, tools_db: ToolsDatabase) -> None:
    unknown = _post(tool_stack, "format_disk", {"device": "/dev/sda"})
    assert unknown.status_code == 404
    assert unknown.json["title"] == "Unknown tool"
    assert "scrape_url" in unknown.json["description"]
    agent = _post(tool_stack, "agent", {"query": "tools are not agents"})
    assert agent.status_code == 404

    for tool, body, problem in BAD_REQUESTS:
        response = _post(tool_stack, tool, body)
        assert response.status_code == 400, (tool, body, response.text)
        assert response.json["title"] == "Invalid tool arguments"
        assert problem in response.json["description"], response.json["description"]

    bad_priority = _post(tool_stack, "scrape_url", {"url": "https://example.com"}, priority="urgent")
    assert bad_priority.status_code == 400
    assert "priority" in bad_priority.json["description"]
    malformed = tool_stack.client.simulate_post(
        "/tools/scrape_url", body=b'{"url": ', headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 400

    assert _task_count(tool_stack) == 0
    with psycopg.connect(tools_db.superuser_url) as connection:
        assert connection.execute("SELECT count(*) FROM items").fetchone() == (10,)


# -- scrape_url -------------------------------------------------------------------------------


def test_scrape_returns_title_and_text_without_script_or_style(tool_stack: Stack, web: FakeWebServer) -> None:
    response = _post(tool_stack, "scrape_url", {"url": web.url("/page")})
    assert response.status_code == 202
    body = response.json
    assert body["status"] == "queued"
    assert body["status_url"] == f"/agent/status/{body['task_id']}"
    assert response.headers["location"] == body["status_url"]

    task = wait_for_state(tool_stack.runtime.sessions, body["task_id"], "SUCCESS")
    result = task.result
    assert result["url"] == web.url("/page")
    assert result["title"] == "Interlock test page"
    assert "Durable execution" in result["content"]
    assert "Tasks survive worker crashes." in result["content"]
    assert "Café crème — unicode survives." in result["content"]
    for marker in ("scriptMarker", "do not extract", "color: red", "noscript marker", "jsonld"):
        assert marker not in result["content"]
    assert result["length"] == len(result["content"])
    assert result["cached"] is False

    status = tool_stack.client.simulate_get(body["status_url"]).json
    assert status["state"] == "SUCCESS"
    assert status["workflow"] == "scrape_url"
    assert status["queue"] == "tools"
    _, headers = web.requests[-1]
    assert headers["User-Agent"] == "Interlock/0.1 (+tools)"


def test_scrape_keeps_only_the_first_5000_characters(tool_stack: Stack, web: FakeWebServer) -> None:
    task_id = _run(tool_stack, "scrape_url", {"url": web.url("/big?size=12000")})
    result = wait_for_state(tool_stack.runtime.sessions, task_id, "SUCCESS").result
    assert len(result["content"]) == 5000
    assert result["length"] == 12000


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/big?size=50000", "over the 20000-byte limit (INTERLOCK_SCRAPE_MAX_BYTES)"),
        ("/big-stream?size=50000", "larger than the 20000-byte limit (INTERLOCK_SCRAPE_MAX_BYTES)"),
        ("/file.pdf", "is not an HTML page (Content-Type 'application/pdf')"),
        ("/plain", "is not an HTML page (Content-Type 'text/plain')"),
        ("/redirect-private", "10.0.0.1 is a private address"),
        ("/redirect-metadata", "169.254.169.254 is a cloud metadata address"),
    ],
)
def test_oversize_non_html_and_private_redirects_fail_at_once(
    tool_stack: Stack, web: FakeWebServer, path: str, problem: str
) -> None:
    task_id = _run(tool_stack, "scrape_url", {"url": web.url(path)})
    task = wait_for_state(tool_stack.runtime.sessions, task_id, "FAILURE")
    assert problem in (task.error or ""), task.error
    assert task.attempts == 1  # permanent: not retried
    assert web.count(path.split("?")[0]) == 1


def test_loopback_is_refused_without_the_allow_list(settings: Settings, web: FakeWebServer, make_stack) -> None:
    _clear_tool_tables(settings)
    running = make_stack(settings.replace(rate_limits=""))  # INTERLOCK_TOOLS_ALLOW_HOSTS left empty
    task_id = _run(running, "scrape_url", {"url": web.url("/page")})
    task = wait_for_state(running.runtime.sessions, task_id, "FAILURE")
    assert "127.0.0.1 is a loopback address" in (task.error or "")
    assert task.attempts == 1
    assert web.count() == 0


# -- call_external_api ------------------------------------------------------------------------


def test_api_answers_map_to_retry_policy(tool_stack: Stack, web: FakeWebServer) -> None:
    web.fail_next("/rate", 1, status=429, retry_after="1")
    web.fail_next("/wobbly", 1, status=503)
    missing = _run(tool_stack, "call_external_api", {"endpoint": web.url("/status/404")})
    limited = _run(tool_stack, "call_external_api", {"endpoint": web.url("/rate"), "params": {"page": 2}})
    wobbly = _run(tool_stack, "call_external_api", {"endpoint": web.url("/wobbly")})
    sessions = tool_stack.runtime.sessions

    task = wait_for_state(sessions, missing, "FAILURE")
    assert "HTTP 404" in (task.error or "")
    assert task.attempts == 1

    task = wait_for_state(sessions, limited, "SUCCESS")
    assert task.attempts == 2
    assert task.result["data"] == {"ok": True, "path": "/rate", "query": {"page": "2"}}
    assert task.result["status_code"] == 200
    assert task.result["cached"] is False
    retry = next(e for e in events(sessions, limited) if e.state == "RETRY")
    assert retry.data["retry_in_ms"] == 1000
    assert "429" in retry.data["error"]

    task = wait_for_state(sessions, wobbly, "SUCCESS")
    assert task.attempts == 2
    assert "HTTP 503" in _errors(tool_stack, wobbly)[0]


# -- caching ----------------------------------------------------------------------------------


def test_a_repeated_call_inside_the_ttl_makes_no_second_request(tool_stack: Stack, web: FakeWebServer) -> None:
    sessions = tool_stack.runtime.sessions
    call = {"endpoint": web.url("/json"), "params": {"q": "durable", "n": 1}}
    first = wait_for_state(sessions, _run(tool_stack, "call_external_api", call), "SUCCESS").result
    # The same arguments in another key order are the same canonical JSON.
    again = {"params": {"n": 1, "q": "durable"}, "endpoint": web.url("/json")}
    second = wait_for_state(sessions, _run(tool_stack, "call_external_api", again), "SUCCESS").result
    assert first["cached"] is False
    assert second["cached"] is True
    assert second["data"] == first["data"]
    assert web.count("/json") == 1

    other = {"endpoint": web.url("/json"), "params": {"q": "other"}}
    assert wait_for_state(sessions, _run(tool_stack, "call_external_api", other), "SUCCESS").result["cached"] is False
    assert web.count("/json") == 2

    for _ in range(2):
        wait_for_state(sessions, _run(tool_stack, "scrape_url", {"url": web.url("/page")}), "SUCCESS")
    assert web.count("/page") == 1


def test_expired_cache_entries_are_purged(settings: Settings) -> None:
    _clear_tool_tables(settings)
    runtime = Runtime.open(settings)
    try:
        with runtime.sessions.begin() as session:
            store_cached(session, "scrape_url", "a" * 64, {"old": True}, expires_at=utcnow() - timedelta(seconds=1))
            store_cached(session, "scrape_url", "b" * 64, {"new": True}, expires_at=utcnow() + timedelta(hours=1))
        with runtime.sessions.begin() as session:
            assert get_cached(session, "scrape_url", "a" * 64) is None
            assert purge_expired_cache(session) == 1
        with runtime.sessions() as session:
            assert session.scalars(select(ToolCacheEntry.key)).all() == ["b" * 64]
    finally:
        runtime.close()


# -- execute_database_query -------------------------------------------------------------------


def test_sql_tool_returns_status_count_and_data(tool_stack: Stack) -> None:
    sessions = tool_stack.runtime.sessions
    query = "SELECT id, name, price, added FROM items WHERE price > :min ORDER BY id"
    task_id = _run(tool_stack, "execute_database_query", {"query": query, "params": {"min": 12}})
    result = wait_for_state(sessions, task_id, "SUCCESS").result
    assert result == {
        "status": "success",
        "count": 2,
        "data": [
            {"id": 9, "name": "item 9", "price": 13.5, "added": "2026-01-10"},
            {"id": 10, "name": "item 10", "price": 15, "added": "2026-01-11"},
        ],
        "truncated": False,
        "cached": False,
    }

    capped = _run(tool_stack, "execute_database_query", {"query": "SELECT id FROM items ORDER BY id"})
    result = wait_for_state(sessions, capped, "SUCCESS").result
    assert result["count"] == 5
    assert result["truncated"] is True
    assert [row["id"] for row in result["data"]] == [1, 2, 3, 4, 5]

    # A value that would be an injection if pasted into the text is only a value when bound.
    bound = {"query": "SELECT id FROM items WHERE name = :name", "params": {"name": "x' OR '1'='1"}}
    result = wait_for_state(sessions, _run(tool_stack, "execute_database_query", bound), "SUCCESS").result
    assert result["count"] == 0


#: The escape of issue 14 and its relatives: SQL text handed to a function, run unseen by the parser.
SQL_ESCAPES = [
    ("SELECT * FROM ts_stat($$SELECT array_to_tsvector(ARRAY[pg_read_file('/etc/passwd')])$$)", "ts_stat"),
    ("SELECT * FROM ts_stat($$SELECT array_to_tsvector(ARRAY[set_config('role', 'none', true)])$$)", "ts_stat"),
    ("SELECT ts_rewrite('a'::tsquery, $$SELECT 'a'::tsquery, pg_read_file('/etc/passwd')::tsquery$$)", "ts_rewrite"),
    ("SELECT query_to_xml('SELECT pg_read_file(''/etc/passwd'')', true, false, '')", "query_to_xml"),
    ("SELECT set_config('role', 'none', true)", "set_config"),
    ("SELECT pg_catalog.pg_read_file('/etc/passwd')", "pg_catalog.pg_read_file"),
    ("SELECT * FROM items, LATERAL pg_ls_dir('.') AS f", "pg_ls_dir"),
    ("SELECT current_setting('data_directory')", "current_setting"),
]


def test_sql_escapes_are_refused_naming_the_function(tool_stack: Stack) -> None:
    for query, function in SQL_ESCAPES:
        response = _post(tool_stack, "execute_database_query", {"query": query})
        assert response.status_code == 400, (query, response.text)
        assert response.json["title"] == "Invalid tool arguments"
        assert f"the function {function}() is not allowed" in response.json["description"], response.json
    assert _task_count(tool_stack) == 0


def test_a_result_over_the_byte_cap_is_truncated_and_never_stored_whole(tool_stack: Stack) -> None:
    """20 MB of rows (INTERLOCK_TOOLS_MAX_RESULT_BYTES=100000 here): what comes back and is cached stays under."""
    sessions = tool_stack.runtime.sessions
    huge = _run(
        tool_stack, "execute_database_query", {"query": "SELECT repeat('x', 5000000) FROM generate_series(1, 4)"}
    )
    result = wait_for_state(sessions, huge, "SUCCESS", timeout=60).result
    assert result["truncated"] is True
    assert result["count"] == 0
    assert result["data"] == []

    query = "SELECT n, repeat('x', 30000) AS filler FROM generate_series(1, 4) AS n"
    some = _run(tool_stack, "execute_database_query", {"query": query})
    result = wait_for_state(sessions, some, "SUCCESS").result
    assert result["truncated"] is True
    assert [row["n"] for row in result["data"]] == [1, 2, 3]
    assert len(json.dumps(result["data"], ensure_ascii=False).encode()) <= 100_000

    status = tool_stack.client.simulate_get(f"/agent/status/{some}")
    assert status.status_code == 200
    assert len(status.content) < 100_000 + 5_000
    with sessions() as session:
        cached = session.scalars(select(ToolCacheEntry.value).where(ToolCacheEntry.tool == "execute_database_query"))
        sizes = [len(json.dumps(value["data"]).encode()) for value in cached]
    assert len(sizes) == 2
    assert max(sizes) <= 100_000


#: What agents ask every day still runs, printed back with pg_catalog-qualified calls.
EVERYDAY = [
    (
        "SELECT count(*) AS n, sum(price) AS total, round(avg(price), 2) AS mean, min(added) AS first FROM items",
        {},
        [{"n": 10, "total": 82.5, "mean": 8.25, "first": "2026-01-02"}],
    ),
    (
        "SELECT to_char(added, 'YYYY-MM') AS month, count(*) AS n FROM items GROUP BY 1",
        {},
        [{"month": "2026-01", "n": 10}],
    ),
    (
        "SELECT json_agg(json_build_object('id', id, 'name', upper(name)) ORDER BY id DESC) AS j FROM items "
        "WHERE id <= 2",
        {},
        [{"j": [{"id": 2, "name": "ITEM 2"}, {"id": 1, "name": "ITEM 1"}]}],
    ),
    ("SELECT CAST(:doc AS jsonb) -> 'a' ->> 1 AS second", {"doc": '{"a": ["x", "y"]}'}, [{"second": "y"}]),
    (
        "SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(id int, name text)",
        {"rows": '[{"id": 1, "name": "a"}]'},
        [{"id": 1, "name": "a"}],
    ),
    (
        "SELECT id, lag(id) OVER w AS previous, sum(price) OVER w AS running FROM items WHERE id IN (1, 2) "
        "WINDOW w AS (ORDER BY id)",
        {},
        [{"id": 1, "previous": None, "running": 1.5}, {"id": 2, "previous": 1, "running": 4.5}],
    ),
    (
        "SELECT extract(day FROM added) AS d, added + interval '1 day' AS next, date_trunc('month', added)::date AS m "
        "FROM items WHERE id = 1",
        {},
        [{"d": 2, "next": "2026-01-03T00:00:00", "m": "2026-01-01"}],
    ),
    (
        "SELECT substring(name FROM 1 FOR 4) AS s, trim(BOTH ' ' FROM '  x ') AS t, position('1' IN name) AS p, "
        "name LIKE 'item%' AS l, name ~* '^ITEM' AS r, split_part(name, ' ', 2)::int AS k FROM items WHERE id = 1",
        {},
        [{"s": "item", "t": "x", "p": 6, "l": True, "r": True, "k": 1}],
    ),
    (
        "WITH RECURSIVE t(n) AS (VALUES (1) UNION ALL SELECT n + 1 FROM t WHERE n < 5) SELECT sum(n) AS s FROM t",
        {},
        [{"s": 15}],
    ),
    (
        "SELECT i.id, c.n FROM items i CROSS JOIN LATERAL (SELECT count(*) AS n FROM items j WHERE j.id <= i.id) c "
        "WHERE i.id = 3",
        {},
        [{"id": 3, "n": 3}],
    ),
    ("SELECT n, i FROM unnest(ARRAY[10, 20]) WITH ORDINALITY AS u(n, i)", {}, [{"n": 10, "i": 1}, {"n": 20, "i": 2}]),
    (
        "SELECT id FROM items WHERE id BETWEEN 2 AND 4 AND name IS DISTINCT FROM 'x' AND id NOT IN (3) "
        "AND price > ALL (SELECT 0) AND id = ANY(:ids) ORDER BY id DESC",
        {"ids": [2, 4, 9]},
        [{"id": 4}, {"id": 2}],
    ),
    (
        "SELECT CASE id WHEN 1 THEN 'one' ELSE 'other' END AS c, COALESCE(NULL, id) AS k, GREATEST(id, 5) AS g, "
        "NULLIF(id, 1) AS z, EXISTS (SELECT 1 FROM items) AS e FROM items WHERE id = 1",
        {},
        [{"c": "one", "k": 1, "g": 5, "z": None, "e": True}],
    ),
    ("SELECT count(*) AS n FROM information_schema.columns WHERE table_name = 'items'", {}, [{"n": 4}]),
    ("SELECT relname FROM pg_class WHERE relname = 'items'", {}, [{"relname": "items"}]),
    ("TABLE items ORDER BY id DESC LIMIT 1", {}, [{"id": 10, "name": "item 10", "price": 15, "added": "2026-01-11"}]),
    ("VALUES (1, 'a')", {}, [{"column1": 1, "column2": "a"}]),
]


@pytest.mark.parametrize(("query", "params", "rows"), EVERYDAY, ids=[q[:50] for q, _, _ in EVERYDAY])
def test_everyday_queries_still_run(
    tool_settings: Settings, query: str, params: dict[str, Any], rows: list[dict[str, Any]]
) -> None:
    assert run_query(query, params, settings=tool_settings)["data"] == rows


def test_a_slow_query_is_stopped_by_the_statement_timeout(tool_stack: Stack) -> None:
    slow = "SELECT count(*) FROM generate_series(1, 100000) AS a, generate_series(1, 100000) AS b"
    task_id = _run(tool_stack, "execute_database_query", {"query": slow})
    task = wait_for_state(tool_stack.runtime.sessions, task_id, "FAILURE")
    # The cross join would run for minutes: PostgreSQL cancelled it at the statement timeout.
    assert "statement timeout of 500 ms" in (task.error or "")
    assert task.attempts == 1


def test_the_worker_refuses_writes_that_skip_the_api(tool_stack: Stack, tools_db: ToolsDatabase) -> None:
    """Defence in depth: a task submitted in-process is checked again by the tool itself."""
    catalogue = discover(tool_stack.settings.agent_modules)
    refused = [
        ("DELETE FROM items", "not DELETE"),
        ("DROP TABLE items", "not DROP"),
        ("SELECT 1; DELETE FROM items", "exactly one statement"),
        (SQL_ESCAPES[0][0], "the function ts_stat() is not allowed"),
    ]
    ids = [
        submit(
            tool_stack.runtime.sessions,
            tool_stack.broker,
            catalogue,
            workflow="execute_database_query",
            input={"query": query},
            priority=4,
        ).id
        for query, _ in refused
    ]
    for task_id, (_, problem) in zip(ids, refused, strict=True):
        task = wait_for_state(tool_stack.runtime.sessions, task_id, "FAILURE")
        assert problem in (task.error or "")
        assert task.attempts == 1
    with psycopg.connect(tools_db.superuser_url) as connection:
        assert connection.execute("SELECT count(*) FROM items").fetchone() == (10,)


def test_the_transaction_is_read_only_and_time_limited_and_the_role_restricted(
    tool_settings: Settings, tools_db: ToolsDatabase
) -> None:
    """What the parser cannot see (a view's body) meets the read-only transaction and the role's rights."""
    limits = run_query("SELECT * FROM limits", settings=tool_settings)["data"]
    assert limits == [{"read_only": "on", "timeout": "500ms", "search_path": 'pg_catalog, "$user", public'}]
    shorter = run_query("SELECT timeout FROM limits", settings=tool_settings, timeout_ms=200)["data"]
    assert shorter == [{"timeout": "200ms"}]
    slow = "SELECT count(*) FROM generate_series(1, 100000) AS a, generate_series(1, 100000) AS b"
    with pytest.raises(PermanentError, match=r"statement timeout of 200 ms \(the task's remaining time\)"):
        run_query(slow, settings=tool_settings, timeout_ms=200)
    with pytest.raises(PermanentError, match="read-only"):
        run_query("SELECT n FROM bump", settings=tool_settings)
    with pytest.raises(PermanentError, match="may not"):
        run_query("SELECT token FROM secrets", settings=tool_settings)


def test_functions_called_as_attributes_are_refused(tool_settings: Settings) -> None:
    """``x.f`` is ``f(x)`` when no column f exists: the database is asked what f could be."""
    for query in ("SELECT i.leak FROM items i", "SELECT (i).leak FROM items AS i", "SELECT items.leak FROM items"):
        with pytest.raises(QueryRefused, match=r"the function public\.leak\(\) is not allowed"):
            run_query(query, settings=tool_settings)
    named = run_query("SELECT i.name, (i).id FROM items i WHERE i.id = 1", settings=tool_settings)["data"]
    assert named == [{"name": "item 1", "id": 1}]


def test_superuser_logins_are_refused_whatever_the_role(tool_settings: Settings, tools_db: ToolsDatabase) -> None:
    as_superuser = tool_settings.replace(tools_database_url=tools_db.superuser_url)
    for role in ("", tools_db.role, tools_db.narrow):
        with pytest.raises(PermanentError, match="a superuser: the SQL tool refuses a login"):
            run_query("SELECT 1 AS one", settings=as_superuser.replace(tools_database_role=role))
    # No superuser itself, but it could SET ROLE to one: refused as well.
    sneaky = tool_settings.replace(tools_database_url=tools_db.sneaky_url)
    with pytest.raises(PermanentError, match=f"a member of {tools_db.admin}"):
        run_query("SELECT 1 AS one", settings=sneaky)

    # A restricted login may narrow its rights further with INTERLOCK_TOOLS_DATABASE_ROLE.
    assert run_query("SELECT count(*) AS n FROM notes", settings=tool_settings)["data"] == [{"n": 1}]
    narrowed = tool_settings.replace(tools_database_role=tools_db.narrow)
    assert run_query("SELECT current_user AS who", settings=narrowed)["data"] == [{"who": tools_db.narrow}]
    assert run_query("SELECT count(*) AS n FROM items", settings=narrowed)["data"] == [{"n": 10}]
    with pytest.raises(PermanentError, match="may not"):
        run_query("SELECT note FROM notes", settings=narrowed)


# -- priorities -------------------------------------------------------------------------------


def test_high_priority_tasks_overtake_a_low_priority_backlog(
    settings: Settings, web: FakeWebServer, request: pytest.FixtureRequest, make_stack
) -> None:
    _clear_tool_tables(settings)
    configured = settings.replace(tools_allow_hosts="127.0.0.1", cache_ttl_api=0.0, worker_threads=2, rate_limits="")
    running = make_stack(configured, worker=False)
    worker = None
    try:
        lows = [
            _run(running, "call_external_api", {"endpoint": web.url("/json"), "params": {"n": i}}, priority="low")
            for i in range(1000)
        ]
        highs = [
            _run(running, "call_external_api", {"endpoint": web.url("/json"), "params": {"h": i}}, priority="high")
            for i in range(10)
        ]
        worker, worker_broker, worker_runtime = start_worker(configured, queues=["tools"], threads=2)

        def finished() -> dict[str, Any] | None:
            with running.runtime.sessions() as session:
                rows = session.execute(
                    select(Task.id, Task.priority, Task.finished_at).where(Task.finished_at.is_not(None))
                ).all()
            done = {row.id: row.finished_at for row in rows}
            low_done = sum(1 for task_id in lows if task_id in done)
            return done if all(h in done for h in highs) and low_done >= 100 else None

        done = wait_until(finished, timeout=120, what="10 high and 100 low tasks to finish")
        last_high = max(done[h] for h in highs)
        low_times = sorted(done[low] for low in lows if low in done)
        overtaken_by = sum(1 for t in low_times if t < last_high)
        print(f"\nlow-priority tasks finished before the last high-priority one: {overtaken_by}")
        assert last_high < low_times[99]
        with running.runtime.sessions() as session:
            assert set(session.scalars(select(Task.priority).where(Task.id.in_(highs)))) == {9}
            assert set(session.scalars(select(Task.priority).where(Task.id.in_(lows[:5])))) == {0}
    finally:
        if worker is not None:
            worker.stop()
            worker_broker.close()
            worker_runtime.close()
        running.broker.flush("tools")  # the rest of the backlog is not needed by later tests


# -- circuit breaker --------------------------------------------------------------------------


def _breaker(stack: Stack, target: str) -> dict[str, Any] | None:
    return next((b for b in breaker_states(stack.runtime.sessions) if b["target"] == target), None)


def test_a_failing_host_opens_the_breaker_which_closes_on_one_probe(tool_stack: Stack, web: FakeWebServer) -> None:
    sessions = tool_stack.runtime.sessions
    target = f"127.0.0.1:{web.port}"
    web.fail_next("/flaky", 3, status=500)
    flaky = _run(tool_stack, "call_external_api", {"endpoint": web.url("/flaky")})

    # Three consecutive 500s (INTERLOCK_BREAKER_THRESHOLD=3) open the breaker.
    wait_until(lambda: (_breaker(tool_stack, target) or {}).get("state") == "open", what="the breaker to open")
    assert web.count("/flaky") == 3

    # While it is open, calls to that host are not made: the task is retried later, not failed.
    healthy = _run(tool_stack, "call_external_api", {"endpoint": web.url("/json")})
    wait_until(lambda: any("circuit breaker" in e for e in _errors(tool_stack, healthy)), what="a fast failure")
    assert web.count("/json") == 0
    assert web.count("/flaky") == 3
    assert wait_for_state(sessions, healthy, {"RETRY", "PROCESSING", "SUCCESS"}).state != "FAILURE"

    # After INTERLOCK_BREAKER_RESET (2 s) one probe goes through, succeeds and closes the breaker.
    wait_for_state(sessions, flaky, "SUCCESS", timeout=20)
    wait_for_state(sessions, healthy, "SUCCESS", timeout=20)
    assert web.count("/flaky") == 4
    assert web.count("/json") == 1
    breaker = _breaker(tool_stack, target)
    assert breaker is not None
    assert breaker["state"] == "closed"
    assert breaker["failures"] == 0
    assert [e for e in _errors(tool_stack, flaky)][:3] == [
        f"HostUnavailable: {web.url('/flaky')} answered HTTP 500 Internal Server Error"
    ] * 3


def test_exactly_one_caller_gets_the_probe(settings: Settings) -> None:
    _clear_tool_tables(settings)
    runtime = Runtime.open(settings.replace(worker_threads=10))
    target = "probe.example:443"
    try:
        for _ in range(3):
            with runtime.sessions.begin() as session:
                state = record_failure(session, target, probe=False, threshold=3, reset=30.0)
        assert state == "open"
        with runtime.sessions.begin() as session:
            refused = admit_call(session, target, probe_lease=5.0, reset=30.0)
        # For the rest of the 30 s reset period (however slow the machine), not just the 5 s probe lease.
        assert not refused.allowed
        assert 5.0 < refused.retry_after <= 30.0

        with runtime.sessions.begin() as session:  # the reset period passes
            session.execute(
                update(CircuitBreaker)
                .where(CircuitBreaker.target == target)
                .values(open_until=utcnow() - timedelta(seconds=1))
            )
        start = threading.Barrier(8)
        admissions = []

        def contend() -> None:
            start.wait()
            with runtime.sessions.begin() as session:
                admissions.append(admit_call(session, target, probe_lease=5.0, reset=30.0))

        threads = [threading.Thread(target=contend) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert len(admissions) == 8
        assert sum(1 for a in admissions if a.allowed and a.probe) == 1
        assert all(0 < a.retry_after <= 5.0 for a in admissions if not a.allowed)  # within the probe's lease

        with runtime.sessions.begin() as session:  # a failed probe re-opens it for the full reset
            assert record_failure(session, target, probe=True, threshold=3, reset=30.0) == "open"
        with runtime.sessions.begin() as session:
            assert not admit_call(session, target, probe_lease=5.0, reset=30.0).allowed
            session.execute(
                update(CircuitBreaker)
                .where(CircuitBreaker.target == target)
                .values(open_until=utcnow() - timedelta(seconds=1))
            )
        with runtime.sessions.begin() as session:
            assert admit_call(session, target, probe_lease=5.0, reset=30.0).probe
        with runtime.sessions.begin() as session:  # a successful probe closes it
            assert record_success(session, target, probe=True) is True
        with runtime.sessions.begin() as session:
            closed = admit_call(session, target, probe_lease=5.0, reset=30.0)
        assert closed.allowed
        assert not closed.probe
    finally:
        runtime.close()
