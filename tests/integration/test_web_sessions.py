"""The dashboard's sign-in, sessions and pages, as a browser and an intruder meet them.

Sessions end on the server at sign-out; the sign-in form's token works once; sign-in attempts are
throttled per client address; non-ASCII tokens are refused, not a 500; the pages send security
headers; what describes every tenant (task counts in /metrics, queue depths) is for operators only.
On PostgreSQL and on SQLite (``interlock dev``'s database).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from models.security import create_key
from tests.stack import MakeStack, Stack
from tests.support import DATABASES, settings_for_database

FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture(params=DATABASES)
def secure(request: pytest.FixtureRequest, tmp_path: Path, make_stack: MakeStack) -> Stack:
    return make_stack(settings_for_database(request, tmp_path).replace(auth="on"), worker=False)


def new_key(stack: Stack, tenant: str, *scopes: str) -> str:
    with stack.runtime.sessions.begin() as session:
        return create_key(session, tenant=tenant, scopes=list(scopes)).key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sign_in_form(stack: Stack, remote_addr: str = "127.0.0.1") -> str:
    """The one-time token of a freshly fetched sign-in form (also its cookie's value)."""
    form = stack.client.simulate_get("/login", remote_addr=remote_addr)
    assert form.status_code == 200, form.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    assert form.cookies["interlock_login"].value == token
    return token


def post_sign_in(stack: Stack, key: str, token: str, *, remote_addr: str = "127.0.0.1", sent: str | None = None) -> Any:
    return stack.client.simulate_post(
        "/login",
        body=f"api_key={key}&csrf_token={sent if sent is not None else token}",
        headers={**FORM, "cookie": f"interlock_login={token}"},
        remote_addr=remote_addr,
    )


def sign_in(stack: Stack, key: str) -> str:
    answer = post_sign_in(stack, key, sign_in_form(stack))
    assert answer.status_code == 303, answer.text
    return str(answer.cookies["interlock_session"].value)


def test_sign_out_ends_the_session_on_the_server(secure: Stack) -> None:
    key = new_key(secure, "acme", "submit", "read")
    cookie = {"cookie": f"interlock_session={sign_in(secure, key)}"}
    page = secure.client.simulate_get("/", headers=cookie)
    assert page.status_code == 200
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    assert secure.client.simulate_get("/dashboard/api/tasks", headers=cookie).status_code == 200

    out = secure.client.simulate_post("/logout", headers=cookie)
    assert out.status_code == 303
    assert out.headers["Location"] == "/login"
    # The old cookie, kept by whoever copied it, opens nothing any more.
    again = secure.client.simulate_get("/", headers=cookie)
    assert again.status_code == 303
    assert again.headers["Location"] == "/login"
    assert secure.client.simulate_get("/dashboard/api/tasks", headers=cookie).status_code == 401
    submitted = secure.client.simulate_post(
        "/agent/execute", json={"query": "x"}, headers={**cookie, "X-CSRF-Token": csrf}
    )
    assert submitted.status_code == 401


def test_sessions_are_independent_and_end_with_their_key(secure: Stack) -> None:
    key = new_key(secure, "acme", "read")
    first, second = sign_in(secure, key), sign_in(secure, key)
    assert first != second
    secure.client.simulate_post("/logout", headers={"cookie": f"interlock_session={first}"})
    assert secure.client.simulate_get("/", headers={"cookie": f"interlock_session={second}"}).status_code == 200
    admin = new_key(secure, "acme", "admin")
    key_id = next(
        k["id"]
        for k in secure.client.simulate_get("/keys", headers=bearer(admin)).json["keys"]
        if k["scopes"] == ["read"]
    )
    assert secure.client.simulate_delete(f"/keys/{key_id}", headers=bearer(admin)).status_code == 200
    assert secure.client.simulate_get("/", headers={"cookie": f"interlock_session={second}"}).status_code == 303


def test_the_sign_in_forms_token_works_once(secure: Stack) -> None:
    key = new_key(secure, "acme", "read")
    token = sign_in_form(secure)
    assert post_sign_in(secure, key, token).status_code == 303
    replayed = post_sign_in(secure, key, token)
    assert replayed.status_code == 403, replayed.text
    assert "interlock_session" not in replayed.cookies
    # A failed attempt uses the token up as well: guessing keys needs a new form every time.
    token = sign_in_form(secure)
    assert post_sign_in(secure, "ilk_wrong", token).status_code == 401
    assert post_sign_in(secure, key, token).status_code == 403


def test_sign_in_attempts_are_throttled_per_client_address(secure: Stack) -> None:
    key = new_key(secure, "acme", "read")
    codes = [
        post_sign_in(secure, "ilk_guess", sign_in_form(secure, "198.51.100.7"), remote_addr="198.51.100.7").status_code
        for _ in range(10)
    ]
    assert codes == [401] * 10
    refused = post_sign_in(secure, key, sign_in_form(secure, "198.51.100.7"), remote_addr="198.51.100.7")
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json["title"]
    assert "interlock_session" not in refused.cookies
    # Another address is not affected.
    assert post_sign_in(secure, key, sign_in_form(secure, "203.0.113.9"), remote_addr="203.0.113.9").status_code == 303


@pytest.mark.parametrize("token", ["é", "ü" * 43, "\u2603-token"])
def test_non_ascii_tokens_and_cookies_are_refused_not_a_500(secure: Stack, token: str) -> None:
    key = new_key(secure, "acme", "submit", "read")
    form_token = sign_in_form(secure)
    answer = post_sign_in(secure, key, form_token, sent=token)
    assert answer.status_code == 403, answer.text
    cookie = sign_in(secure, key)
    # Headers reach the application as latin-1 text, so send the UTF-8 bytes that way.
    raw = token.encode().decode("latin-1")
    csrf = secure.client.simulate_post(
        "/agent/execute",
        json={"query": "x"},
        headers={"cookie": f"interlock_session={cookie}", "X-CSRF-Token": raw},
    )
    assert csrf.status_code == 403, csrf.text
    assert "CSRF" in csrf.json["title"], csrf.text
    for forged in (raw, f"{cookie[:-2]}{raw}", f"x.1.{raw}"):
        page = secure.client.simulate_get("/dashboard/api/tasks", headers={"cookie": f"interlock_session={forged}"})
        assert page.status_code == 401, (forged, page.status, page.text)


def test_dashboard_and_sign_in_pages_send_security_headers(secure: Stack) -> None:
    key = new_key(secure, "acme", "read")
    pages = [
        secure.client.simulate_get("/login"),
        secure.client.simulate_get("/", headers={"cookie": f"interlock_session={sign_in(secure, key)}"}),
    ]
    for page in pages:
        assert page.status_code == 200
        assert page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        policy = page.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy
        assert "default-src 'none'" in policy
        nonce = re.search(r"script-src 'nonce-([^']+)'", policy) or re.search(r"style-src 'nonce-([^']+)'", policy)
        assert nonce is not None, policy
        # Every inline script and style carries this answer's nonce; nothing else may run.
        for tag in re.findall(r"<(?:script|style)\b[^>]*>", page.text):
            assert f'nonce="{nonce.group(1)}"' in tag, tag
        markup = re.sub(r"<script.*?</script>", "", page.text, flags=re.S)
        assert not re.search(r"\sstyle=|\son[a-z]+=", markup), "inline styles and handlers would be refused"


def test_task_counts_and_queue_views_are_for_operators_only(secure: Stack) -> None:
    tenant_metrics, tenant_admin = new_key(secure, "acme", "metrics"), new_key(secure, "acme", "admin")
    operator = new_key(secure, "system", "metrics", "read")
    for key in (tenant_metrics, tenant_admin):
        refused = secure.client.simulate_get("/metrics", headers=bearer(key))
        assert refused.status_code == 403, refused.text
        assert "system" in refused.json["description"], refused.text
    scraped = secure.client.simulate_get("/metrics", headers=bearer(operator))
    assert scraped.status_code == 200
    assert "interlock_tasks" in scraped.text

    mine = secure.client.simulate_get("/dashboard/api/overview", headers=bearer(tenant_admin)).json
    assert mine["operator"] is False
    assert mine["queues"] is None
    assert mine["breakers"] is None
    assert mine["broker_ui"] is None
    assert mine["events"] == []
    assert "rate_limits" in mine
    everything = secure.client.simulate_get("/dashboard/api/overview", headers=bearer(operator)).json
    assert everything["operator"] is True
    assert isinstance(everything["breakers"], list)
