"""API keys, scopes and tenants on every route; idempotent submission; bad input refused cleanly."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select

from interlock.settings import Settings
from models.events import Event
from models.security import ApiKey, IdempotencyKey, create_key
from models.task_transitions import create_task
from models.tasks import Task, TaskEvent
from tests.stack import MakeStack, Stack
from tests.support import wait_until
from web.auth import ROUTE_SCOPES
from web.openapi import REQUEST_BODIES, routes

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


@pytest.fixture
def secure(settings: Settings, make_stack: MakeStack) -> Stack:
    """The API with authentication on (no worker: nothing here needs a task to run)."""
    return make_stack(settings.replace(auth="on"), worker=False)


def new_key(stack: Stack, tenant: str, *scopes: str) -> str:
    with stack.runtime.sessions.begin() as session:
        return create_key(session, tenant=tenant, scopes=list(scopes)).key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def add_task(stack: Stack, tenant: str, task_id: str) -> str:
    with stack.runtime.sessions.begin() as session:
        create_task(session, task_id=task_id, workflow="agent", actor="agent", queue="default", input={}, tenant=tenant)
    return task_id


def counts(stack: Stack) -> dict[str, int]:
    with stack.runtime.sessions() as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Task, TaskEvent, Event, ApiKey, IdempotencyKey)
        }


TASK_A = "00000000-0000-4000-8000-00000000000a"
#: A scope that is not enough for each scope (admin includes all others).
INSUFFICIENT = {"read": "metrics", "submit": "read", "metrics": "read", "admin": "submit"}


def fill(template: str) -> str:
    values = {"task_id": TASK_A, "workflow_id": TASK_A, "name": "scrape_url", "key_id": TASK_A}
    return re.sub(r"{(\w+)}", lambda m: values[m.group(1)], template)


def test_every_route_has_an_entry_in_the_scope_table(secure: Stack) -> None:
    served = {(template, method) for template, method, _ in routes(secure.client.app)}
    assert served, "no routes found"
    assert served - ROUTE_SCOPES.keys() == set(), "routes without a scope entry (they would need admin)"
    assert ROUTE_SCOPES.keys() - served == set(), "scope entries for routes that do not exist"


def test_each_route_refuses_no_key_401_missing_scope_403_other_tenant_404(secure: Stack) -> None:
    add_task(secure, "acme", TASK_A)
    protected = sorted((t, m) for t, m, _ in routes(secure.client.app) if ROUTE_SCOPES[(t, m)] is not None)
    weak = {scope: new_key(secure, "other", INSUFFICIENT[scope]) for scope in INSUFFICIENT}
    full = {scope: new_key(secure, "other", scope) for scope in INSUFFICIENT}
    checked_tenancy = 0
    for template, method in protected:
        scope = ROUTE_SCOPES[(template, method)]
        assert scope is not None
        path = fill(template)
        for headers in ({}, bearer("ilk_not-a-key"), {"Authorization": "Basic abc"}):
            response = secure.client.simulate_request(method, path, headers=headers)
            assert response.status_code in (401, 303), (template, method, response.status)
            if response.status_code == 401:
                assert response.headers["WWW-Authenticate"].startswith("Bearer"), template
                assert response.json["title"], template
            else:  # the dashboard page sends a browser to the sign-in form
                assert template == "/"
                assert response.headers["Location"] == "/login"
        response = secure.client.simulate_request(method, path, headers=bearer(weak[scope]))
        assert response.status_code == 403, (template, method, response.status, response.text)
        assert scope in response.json["description"]
        if "{task_id}" in template or "{workflow_id}" in template:
            response = secure.client.simulate_request(method, path, headers=bearer(full[scope]))
            assert response.status_code == 404, (template, method, response.status, response.text)
            checked_tenancy += 1
    assert checked_tenancy >= 9


def test_a_tenant_sees_its_own_tasks_and_lists_only_them(secure: Stack) -> None:
    acme, other = new_key(secure, "acme", "submit", "read"), new_key(secure, "other", "submit", "read")
    created = secure.client.simulate_post("/agent/execute", json={"query": "mine"}, headers=bearer(acme))
    assert created.status_code == 202, created.text
    task_id = created.json["task_id"]
    assert secure.client.simulate_get(f"/agent/status/{task_id}", headers=bearer(acme)).status_code == 200
    assert secure.client.simulate_get(f"/agent/status/{task_id}", headers=bearer(other)).status_code == 404
    assert secure.client.simulate_post(f"/agent/cancel/{task_id}", headers=bearer(other)).status_code == 404
    mine = secure.client.simulate_get("/dashboard/api/tasks", headers=bearer(acme)).json["tasks"]
    theirs = secure.client.simulate_get("/dashboard/api/tasks", headers=bearer(other)).json["tasks"]
    assert [t["task_id"] for t in mine] == [task_id]
    assert theirs == []
    with secure.runtime.sessions() as session:
        task = session.get(Task, task_id)
        assert task is not None
        assert task.tenant == "acme"


def test_system_tasks_are_visible_to_admin_keys_only(secure: Stack) -> None:
    add_task(secure, "system", TASK_A)
    admin, reader = new_key(secure, "acme", "admin"), new_key(secure, "acme", "read")
    assert secure.client.simulate_get(f"/agent/status/{TASK_A}", headers=bearer(admin)).status_code == 200
    assert secure.client.simulate_get(f"/agent/status/{TASK_A}", headers=bearer(reader)).status_code == 404


def test_revoked_keys_are_refused_and_keys_are_stored_as_hashes(secure: Stack) -> None:
    admin = new_key(secure, "acme", "admin")
    made = secure.client.simulate_post("/keys", json={"scopes": ["read"]}, headers=bearer(admin))
    assert made.status_code == 201, made.text
    key, key_id = made.json["key"], made.json["id"]
    assert secure.client.simulate_get("/dashboard/api/tasks", headers=bearer(key)).status_code == 200
    listed = secure.client.simulate_get("/keys", headers=bearer(admin)).json["keys"]
    assert key_id in {k["id"] for k in listed}
    assert key not in json.dumps(listed)
    with secure.runtime.sessions() as session:
        stored = json.dumps([[k.id, k.hash, k.scopes] for k in session.scalars(select(ApiKey))])
    assert key not in stored
    assert secure.client.simulate_delete(f"/keys/{key_id}", headers=bearer(admin)).status_code == 200
    # Refused once the process's cached lookup expires (INTERLOCK_API_KEY_CACHE_SECONDS).
    wait_until(
        lambda: secure.client.simulate_get("/dashboard/api/tasks", headers=bearer(key)).status_code == 401,
        timeout=60,
        what="the revoked key to be refused",
    )
    other_admin = new_key(secure, "other", "admin")
    assert (
        secure.client.simulate_post(
            "/keys", json={"scopes": ["read"], "tenant": "acme"}, headers=bearer(other_admin)
        ).status_code
        == 403
    )


def test_public_routes_need_no_key(secure: Stack) -> None:
    for path in ("/healthz", "/openapi.json", "/docs", "/login"):
        assert secure.client.simulate_get(path).status_code == 200, path
    assert secure.client.simulate_post("/webhook/custom", body=b"{}").status_code in (401, 503)
    metrics = new_key(secure, "system", "metrics")  # /metrics is for operators (see test_web_sessions)
    assert secure.client.simulate_get("/metrics", headers=bearer(metrics)).status_code == 200


def test_dashboard_session_cookie_with_csrf(secure: Stack) -> None:
    key = new_key(secure, "acme", "submit", "read")
    form = secure.client.simulate_get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    login_cookie = form.cookies["interlock_login"]
    assert login_cookie.http_only
    assert login_cookie.same_site == "Strict"
    refused = secure.client.simulate_post(
        "/login",
        body=f"api_key={key}&csrf_token=wrong",
        headers={"content-type": "application/x-www-form-urlencoded", "cookie": f"interlock_login={token}"},
    )
    assert refused.status_code == 403
    signed_in = secure.client.simulate_post(
        "/login",
        body=f"api_key={key}&csrf_token={token}",
        headers={"content-type": "application/x-www-form-urlencoded", "cookie": f"interlock_login={token}"},
    )
    assert signed_in.status_code == 303
    assert signed_in.headers["Location"] == "/"
    session_cookie = signed_in.cookies["interlock_session"]
    assert session_cookie.http_only
    assert session_cookie.same_site == "Strict"
    assert key not in session_cookie.value
    cookie = {"cookie": f"interlock_session={session_cookie.value}"}
    page = secure.client.simulate_get("/", headers=cookie)
    assert page.status_code == 200
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    assert secure.client.simulate_get("/dashboard/api/tasks", headers=cookie).status_code == 200
    no_csrf = secure.client.simulate_post("/agent/execute", json={"query": "x"}, headers=cookie)
    assert no_csrf.status_code == 403
    assert "CSRF" in no_csrf.json["title"]
    with_csrf = secure.client.simulate_post(
        "/agent/execute", json={"query": "x"}, headers={**cookie, "X-CSRF-Token": csrf}
    )
    assert with_csrf.status_code == 202, with_csrf.text
    forged = session_cookie.value[:-4] + "0000"
    assert (
        secure.client.simulate_get(
            "/dashboard/api/tasks", headers={"cookie": f"interlock_session={forged}"}
        ).status_code
        == 401
    )


# -- idempotency ------------------------------------------------------------------------------


def test_twenty_concurrent_identical_submissions_with_one_key_make_one_task(secure: Stack) -> None:
    key = new_key(secure, "acme", "submit", "read")
    headers = {**bearer(key), "Idempotency-Key": "order-42"}
    body = {"query": "once only", "context": {"n": 1}}

    def post(_: int) -> Any:
        return secure.client.simulate_post("/agent/execute", json=body, headers=headers)

    queued_before = secure.broker.get_queue_message_counts("default")[0]
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(post, range(20)))
    assert sorted(r.status_code for r in responses) == [200] * 19 + [202], [r.text for r in responses]
    assert len({r.json["task_id"] for r in responses}) == 1
    with secure.runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Task)) == 1
    # One message, published by the API's outbox relay after the commit (and never a second one).
    wait_until(lambda: secure.broker.get_queue_message_counts("default")[0] >= queued_before + 1, timeout=30)
    assert wait_until(lambda: secure.broker.outbox.counters.messages >= 1, timeout=30)
    assert secure.broker.get_queue_message_counts("default")[0] == queued_before + 1

    again = secure.client.simulate_post("/agent/execute", json=body, headers=headers)
    assert again.status_code == 200
    assert again.json["task_id"] == responses[0].json["task_id"]
    changed = secure.client.simulate_post("/agent/execute", json={"query": "another"}, headers=headers)
    assert changed.status_code == 422
    assert "Idempotency-Key" in changed.json["title"]
    other = new_key(secure, "other", "submit")
    theirs = secure.client.simulate_post(
        "/agent/execute", json=body, headers={**bearer(other), "Idempotency-Key": "order-42"}
    )
    assert theirs.status_code == 202
    assert theirs.json["task_id"] != responses[0].json["task_id"]
    bad = secure.client.simulate_post(
        "/agent/execute", json=body, headers={**bearer(key), "Idempotency-Key": "x" * 300}
    )
    assert bad.status_code == 400


# -- bad input --------------------------------------------------------------------------------

DEEP = ("[" * 100_000 + "]" * 100_000).encode()
NESTED = json.dumps({"query": "q", "context": json.loads("{" + '"a":{' * 80 + "}" * 81)}).encode()
JSON_CT = {"content-type": "application/json"}

BAD_BODIES: list[tuple[str, bytes, dict[str, str]]] = [
    ("malformed JSON", b'{"query": ', JSON_CT),
    ("wrong types", b'{"query": 5, "context": [], "priority": "urgent"}', JSON_CT),
    ("not an object", b'["query"]', JSON_CT),
    ("huge string", json.dumps({"query": "x" * 200_000}).encode(), JSON_CT),
    ("over the size limit", json.dumps({"query": "x" * 1_100_000}).encode(), JSON_CT),
    ("deep nesting", DEEP, JSON_CT),
    ("nested context", NESTED, JSON_CT),
    ("invalid UTF-8", b'{"query": "\xff\xfe\xc3("}', JSON_CT),
    ("NUL byte", b'{"query": "a\\u0000b"}', JSON_CT),
    ("raw NUL byte", b'{"query": "a\x00b"}', JSON_CT),
    ("lone surrogate", b'{"query": "\\ud800"}', JSON_CT),
    ("form encoded", b"query=hi", {"content-type": "application/x-www-form-urlencoded"}),
    ("empty body", b"", JSON_CT),
]

BAD_IDS = [
    "../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "1' OR '1'='1",
    "1; DROP TABLE tasks; --",
    "%00",
    "a%00b",
    "%FF%FE",
    "%C3%28",
    "x" * 5000,
    "%25%32%65%25%32%65",
    "\u202etask",
]


def _bad_requests(app: Any) -> Iterator[tuple[str, str, str, bytes, dict[str, str]]]:
    for template, method, _ in routes(app):
        if template.startswith("/webhook/") or template in ("/login", "/logout"):
            continue  # they read raw bodies; covered by their own tests
        if (template, method) in REQUEST_BODIES or template == "/tools/{name}":
            for label, body, headers in BAD_BODIES:
                yield label, method, fill(template), body, headers
        for bad_id in BAD_IDS if "{" in template else []:
            path = re.sub(r"{(\w+)}", lambda m: bad_id if m.group(1) != "name" else bad_id, template)
            yield f"id {bad_id[:20]!r}", method, path, b"{}" if method == "POST" else b"", JSON_CT
        yield "bad query", method, fill(template) + "?limit=abc&wait=-1&queue=%00&since=nope&after=x", b"", {}


def test_bad_input_on_every_route_is_a_4xx_json_error_and_changes_nothing(secure: Stack) -> None:
    admin = new_key(secure, "acme", "admin")
    add_task(secure, "acme", TASK_A)
    before = counts(secure)
    failures = []
    for label, method, path, body, headers in _bad_requests(secure.client.app):
        response = secure.client.simulate_request(method, path, body=body, headers={**headers, **bearer(admin)})
        status = response.status_code
        if status >= 500 or (status >= 400 and "json" not in (response.headers.get("content-type") or "")):
            failures.append((label, method, path[:60], response.status, response.text[:200]))
        elif status >= 400 and not response.json.get("title"):
            failures.append((label, method, path[:60], "no title", response.text[:200]))
        elif status < 400 and not (method == "GET" or label == "bad query"):
            failures.append((label, method, path[:60], response.status, response.text[:200]))
    assert failures == []
    assert counts(secure) == before


def test_openapi_document_is_built_from_the_validating_schemas(secure: Stack) -> None:
    from actors.tools.catalogue import TOOL_SCHEMAS
    from web.schemas import EVENT_REQUEST, EXECUTE_REQUEST

    doc = secure.client.simulate_get("/openapi.json").json
    assert doc["openapi"].startswith("3.")

    def body(path: str) -> Any:
        return doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]

    assert body("/agent/execute") == EXECUTE_REQUEST
    assert body("/events") == EVENT_REQUEST
    for tool, schema in TOOL_SCHEMAS.items():
        assert body(f"/tools/{tool}") == schema
    operations = {(path, method.upper()) for path, methods in doc["paths"].items() for method in methods}
    for template, method, _ in routes(secure.client.app):
        if template != "/tools/{name}":
            assert (template, method) in operations
            assert doc["paths"][template][method.lower()]["x-scope"] == ROUTE_SCOPES[(template, method)]
    assert "/openapi.json" in secure.client.simulate_get("/docs").text


def test_an_idempotency_key_older_than_24_hours_starts_a_new_task(secure: Stack) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from models.base import utcnow

    headers = {**bearer(new_key(secure, "acme", "submit")), "Idempotency-Key": "daily-report"}
    first = secure.client.simulate_post("/agent/execute", json={"query": "report"}, headers=headers)
    assert first.status_code == 202
    with secure.runtime.sessions.begin() as session:
        session.execute(update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=25)))
    second = secure.client.simulate_post("/agent/execute", json={"query": "report"}, headers=headers)
    assert second.status_code == 202
    assert second.json["task_id"] != first.json["task_id"]
    third = secure.client.simulate_post("/agent/execute", json={"query": "report"}, headers=headers)
    assert third.status_code == 200
    assert third.json["task_id"] == second.json["task_id"]
