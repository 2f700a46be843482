"""Tools end to end: POST /tools/{name} -> RabbitMQ -> worker -> PostgreSQL, against loopback servers.

The outside world is a threaded web server on 127.0.0.1 (testkit/fakes/http_server.py); the tools
database is a scratch PostgreSQL database with a restricted login role, made and dropped here.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import make_url

from actors.circuit_breaker import breaker_states
from actors.errors import PermanentError
from actors.registry import discover
from actors.runtime import Runtime
from actors.sql_tool import run_query
from actors.submit import submit
from interlock.settings import Settings
from interlock.worker import start_worker
from models.base import utcnow
from models.breakers import CircuitBreaker, admit_call, record_failure, record_success
from models.tasks import Task
from models.tool_cache import ToolCacheEntry, get_cached, purge_expired_cache, store_cached
from testkit.fakes.http_server import FakeWebServer
from tests.conftest import ADMIN_DATABASE_URL, Stack, _admin, start_stack, stop_stack
from tests.support import events, wait_for_state, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

README = Path(__file__).resolve().parents[2] / "README.md"


@dataclass(frozen=True)
class ToolsDatabase:
    name: str
    role: str
    superuser_url: str
    restricted_url: str


@pytest.fixture(scope="module")
def tools_db() -> Iterator[ToolsDatabase]:
    """A database for the SQL tool: ten items, and a login role that may only SELECT them."""
    suffix = uuid.uuid4().hex[:8]
    name, role = f"interlock_tools_{suffix}", f"interlock_tools_reader_{suffix}"
    _admin(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE')
    _admin(f'CREATE DATABASE "{name}"')
    superuser_url = ADMIN_DATABASE_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(superuser_url, autocommit=True) as connection:
        connection.execute(
            "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL, price numeric(10, 2) NOT NULL, "
            "added date NOT NULL)"
        )
        connection.execute(
            "INSERT INTO items SELECT i, 'item ' || i, i * 1.5, date '2026-01-01' + i FROM generate_series(1, 10) i"
        )
        connection.execute("CREATE SEQUENCE counter")
        connection.execute(f'GRANT SELECT ON items TO "{role}"')
        connection.execute(f'GRANT USAGE, UPDATE ON SEQUENCE counter TO "{role}"')
    restricted_url = make_url(superuser_url).set(username=role).render_as_string(hide_password=False)
    yield ToolsDatabase(name, role, superuser_url, restricted_url)
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin(f'DROP ROLE IF EXISTS "{role}"')


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
        breaker_threshold=3,
        breaker_reset=2.0,
        min_backoff=0.1,
        max_backoff=0.3,
        # Fast failures on an open breaker count as starts: leave room for a lost probe race.
        max_deliveries=10,
    )


@pytest.fixture
def tool_stack(tool_settings: Settings) -> Iterator[Stack]:
    running = start_stack(tool_settings)
    yield running
    stop_stack(running)


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


# -- configuration ----------------------------------------------------------------------------


def test_readme_table_lists_every_tool_limit() -> None:
    table = README.read_text()
    for variable in (
        "INTERLOCK_SCRAPE_MAX_BYTES",
        "INTERLOCK_HTTP_TIMEOUT",
        "INTERLOCK_TOOLS_STATEMENT_TIMEOUT_MS",
        "INTERLOCK_TOOLS_MAX_ROWS",
        "INTERLOCK_API_MAX_BYTES",
        "INTERLOCK_HTTP_MAX_REDIRECTS",
        "INTERLOCK_TOOLS_ALLOW_HOSTS",
        "INTERLOCK_TOOLS_DATABASE_URL",
        "INTERLOCK_CACHE_TTL_API",
        "INTERLOCK_BREAKER_THRESHOLD",
        "INTERLOCK_BREAKER_RESET",
    ):
        assert re.search(rf"^\| `{variable}` \|", table, re.M), variable
    assert "| `INTERLOCK_CACHE_TTL_API` | `1800.0` |" in table


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
]


def test_bad_tool_requests_are_refused_and_nothing_is_stored(tool_stack: Stack, tools_db: ToolsDatabase) -> None:
    unknown = _post(tool_stack, "format_disk", {"device": "/dev/sda"})
    assert unknown.status_code == 404 and unknown.json["title"] == "Unknown tool"
    assert "scrape_url" in unknown.json["description"]
    agent = _post(tool_stack, "agent", {"query": "tools are not agents"})
    assert agent.status_code == 404

    for tool, body, problem in BAD_REQUESTS:
        response = _post(tool_stack, tool, body)
        assert response.status_code == 400, (tool, body, response.text)
        assert response.json["title"] == "Invalid tool arguments"
        assert problem in response.json["description"], response.json["description"]

    bad_priority = _post(tool_stack, "scrape_url", {"url": "https://example.com"}, priority="urgent")
    assert bad_priority.status_code == 400 and "priority" in bad_priority.json["description"]
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
    assert body["status"] == "queued" and body["status_url"] == f"/agent/status/{body['task_id']}"
    assert response.headers["location"] == body["status_url"]

    task = wait_for_state(tool_stack.runtime.sessions, body["task_id"], "SUCCESS")
    result = task.result
    assert result["url"] == web.url("/page")
    assert result["title"] == "Interlock test page"
    assert "Durable execution" in result["content"] and "Tasks survive worker crashes." in result["content"]
    assert "Café crème — unicode survives." in result["content"]
    for marker in ("scriptMarker", "do not extract", "color: red", "noscript marker", "jsonld"):
        assert marker not in result["content"]
    assert result["length"] == len(result["content"]) and result["cached"] is False

    status = tool_stack.client.simulate_get(body["status_url"]).json
    assert status["state"] == "SUCCESS" and status["workflow"] == "scrape_url" and status["queue"] == "tools"
    _, headers = web.requests[-1]
    assert headers["User-Agent"] == "Interlock/0.1 (+tools)"


def test_scrape_keeps_only_the_first_5000_characters(tool_stack: Stack, web: FakeWebServer) -> None:
    task_id = _run(tool_stack, "scrape_url", {"url": web.url("/big?size=12000")})
    result = wait_for_state(tool_stack.runtime.sessions, task_id, "SUCCESS").result
    assert len(result["content"]) == 5000 and result["length"] == 12000


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


def test_loopback_is_refused_without_the_allow_list(settings: Settings, web: FakeWebServer) -> None:
    _clear_tool_tables(settings)
    running = start_stack(settings.replace(rate_limits=""))  # INTERLOCK_TOOLS_ALLOW_HOSTS left empty
    try:
        task_id = _run(running, "scrape_url", {"url": web.url("/page")})
        task = wait_for_state(running.runtime.sessions, task_id, "FAILURE")
        assert "127.0.0.1 is a loopback address" in (task.error or "") and task.attempts == 1
        assert web.count() == 0
    finally:
        stop_stack(running)


# -- call_external_api ------------------------------------------------------------------------


def test_api_answers_map_to_retry_policy(tool_stack: Stack, web: FakeWebServer) -> None:
    web.fail_next("/rate", 1, status=429, retry_after="1")
    web.fail_next("/wobbly", 1, status=503)
    missing = _run(tool_stack, "call_external_api", {"endpoint": web.url("/status/404")})
    limited = _run(tool_stack, "call_external_api", {"endpoint": web.url("/rate"), "params": {"page": 2}})
    wobbly = _run(tool_stack, "call_external_api", {"endpoint": web.url("/wobbly")})
    sessions = tool_stack.runtime.sessions

    task = wait_for_state(sessions, missing, "FAILURE")
    assert "HTTP 404" in (task.error or "") and task.attempts == 1

    task = wait_for_state(sessions, limited, "SUCCESS")
    assert task.attempts == 2
    assert task.result["data"] == {"ok": True, "path": "/rate", "query": {"page": "2"}}
    assert task.result["status_code"] == 200 and task.result["cached"] is False
    retry = next(e for e in events(sessions, limited) if e.state == "RETRY")
    assert retry.data["retry_in_ms"] == 1000 and "429" in retry.data["error"]

    task = wait_for_state(sessions, wobbly, "SUCCESS")
    assert task.attempts == 2 and "HTTP 503" in _errors(tool_stack, wobbly)[0]


# -- caching ----------------------------------------------------------------------------------


def test_a_repeated_call_inside_the_ttl_makes_no_second_request(tool_stack: Stack, web: FakeWebServer) -> None:
    sessions = tool_stack.runtime.sessions
    call = {"endpoint": web.url("/json"), "params": {"q": "durable", "n": 1}}
    first = wait_for_state(sessions, _run(tool_stack, "call_external_api", call), "SUCCESS").result
    # The same arguments in another key order are the same canonical JSON.
    again = {"params": {"n": 1, "q": "durable"}, "endpoint": web.url("/json")}
    second = wait_for_state(sessions, _run(tool_stack, "call_external_api", again), "SUCCESS").result
    assert first["cached"] is False and second["cached"] is True
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
    assert result["count"] == 5 and result["truncated"] is True  # INTERLOCK_TOOLS_MAX_ROWS=5
    assert [row["id"] for row in result["data"]] == [1, 2, 3, 4, 5]

    # A value that would be an injection if pasted into the text is only a value when bound.
    bound = {"query": "SELECT id FROM items WHERE name = :name", "params": {"name": "x' OR '1'='1"}}
    result = wait_for_state(sessions, _run(tool_stack, "execute_database_query", bound), "SUCCESS").result
    assert result["count"] == 0


def test_a_slow_query_is_stopped_by_the_statement_timeout(tool_stack: Stack) -> None:
    task_id = _run(tool_stack, "execute_database_query", {"query": "SELECT pg_sleep(5)"})
    task = wait_for_state(tool_stack.runtime.sessions, task_id, "FAILURE", timeout=10)
    assert "statement timeout of 500 ms" in (task.error or "") and task.attempts == 1
    assert task.finished_at is not None and task.started_at is not None
    assert (task.finished_at - task.started_at).total_seconds() < 4


def test_the_worker_refuses_writes_that_skip_the_api(tool_stack: Stack, tools_db: ToolsDatabase) -> None:
    """Defence in depth: a task submitted in-process is checked again by the tool itself."""
    catalogue = discover(tool_stack.settings.agent_modules)
    ids = [
        submit(
            tool_stack.runtime.sessions,
            tool_stack.broker,
            catalogue,
            workflow="execute_database_query",
            input={"query": query},
            priority=4,
        ).id
        for query in ("DELETE FROM items", "DROP TABLE items", "SELECT 1; DELETE FROM items")
    ]
    for task_id, problem in zip(ids, ("not DELETE", "not DROP", "exactly one statement"), strict=True):
        task = wait_for_state(tool_stack.runtime.sessions, task_id, "FAILURE")
        assert problem in (task.error or "") and task.attempts == 1
    with psycopg.connect(tools_db.superuser_url) as connection:
        assert connection.execute("SELECT count(*) FROM items").fetchone() == (10,)


def test_read_only_transaction_and_role_stop_what_the_parser_lets_through(
    tool_settings: Settings, tools_db: ToolsDatabase
) -> None:
    with pytest.raises(PermanentError, match="read-only"):
        run_query("SELECT nextval('counter')", settings=tool_settings)
    with pytest.raises(PermanentError, match="may not"):
        run_query("SELECT rolpassword FROM pg_authid", settings=tool_settings)


def test_superuser_connections_are_refused(tool_settings: Settings, tools_db: ToolsDatabase) -> None:
    as_superuser = tool_settings.replace(tools_database_url=tools_db.superuser_url)
    with pytest.raises(PermanentError, match="logs in as a superuser"):
        run_query("SELECT 1 AS one", settings=as_superuser)
    with pytest.raises(PermanentError, match="is a superuser"):
        run_query("SELECT 1 AS one", settings=as_superuser.replace(tools_database_role="postgres"))
    # Named restricted role: the superuser login switches to it for the transaction.
    switched = as_superuser.replace(tools_database_role=tools_db.role)
    assert run_query("SELECT current_user AS who", settings=switched)["data"] == [{"who": tools_db.role}]
    with pytest.raises(PermanentError, match="may not"):
        run_query("SELECT rolpassword FROM pg_authid", settings=switched)


# -- priorities -------------------------------------------------------------------------------


def test_high_priority_tasks_overtake_a_low_priority_backlog(
    settings: Settings, web: FakeWebServer, request: pytest.FixtureRequest
) -> None:
    _clear_tool_tables(settings)
    configured = settings.replace(tools_allow_hosts="127.0.0.1", cache_ttl_api=0.0, worker_threads=2, rate_limits="")
    running = start_stack(configured, worker=False)
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
        stop_stack(running)


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
    assert web.count("/json") == 0 and web.count("/flaky") == 3
    assert wait_for_state(sessions, healthy, {"RETRY", "PROCESSING", "SUCCESS"}).state != "FAILURE"

    # After INTERLOCK_BREAKER_RESET (2 s) one probe goes through, succeeds and closes the breaker.
    wait_for_state(sessions, flaky, "SUCCESS", timeout=20)
    wait_for_state(sessions, healthy, "SUCCESS", timeout=20)
    assert web.count("/flaky") == 4 and web.count("/json") == 1  # one request each after opening
    breaker = _breaker(tool_stack, target)
    assert breaker is not None and breaker["state"] == "closed" and breaker["failures"] == 0
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
        assert not refused.allowed and 29 < refused.retry_after <= 30

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
        assert all(4.0 < a.retry_after <= 5.0 for a in admissions if not a.allowed)  # the probe's lease left

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
        assert closed.allowed and not closed.probe
    finally:
        runtime.close()
