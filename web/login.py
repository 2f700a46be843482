"""The dashboard's sign-in: ``/login`` takes an API key once and starts a session on the server.

The session cookie is a random token (HttpOnly, SameSite=Strict); the session itself is a row in
the database (``models.web_sessions``), so ``/logout`` ends it on every replica at once, as do its
expiry and revoking its key. Requests it authenticates that change something must also send the
CSRF token (see ``web.auth``). The sign-in form carries a one-time token, bound to a cookie and
consumed by the first sign-in that uses it. Sign-in attempts are limited per client address,
cluster-wide (429 with ``Retry-After`` beyond the limit).
"""

from __future__ import annotations

import html
import math
from datetime import timedelta
from urllib.parse import parse_qs

import falcon
from sqlalchemy.orm import Session, sessionmaker

from actors.limits import SlidingWindow
from interlock.limits import Limit
from models.security import find_key
from models.web_sessions import end_session, issue_sign_in_token, start_session, use_sign_in_token

from .auth import SESSION_COOKIE, SESSION_SECONDS, same_secret
from .pages import CSP_NONCE, protect_page

__all__ = ["LoginResource", "LogoutResource", "SIGN_IN_ATTEMPTS", "SIGN_IN_FORMS"]

FORM_COOKIE = "interlock_login"
FORM_SECONDS = 900
MAX_FORM_BYTES = 4096
#: Sign-in attempts (``POST /login``) one client address may make, cluster-wide.
SIGN_IN_ATTEMPTS = Limit(10, 60.0)
#: Sign-in forms (``GET /login``, each stores a one-time token) one client address may fetch.
SIGN_IN_FORMS = Limit(60, 60.0)

FORM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Interlock: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style nonce="__CSP_NONCE__">body {{ font: 14px system-ui, sans-serif; margin: 40px }}</style></head>
<body>
<h1>Interlock</h1><p>{message}</p>
<form method="post" action="/login">
<input type="hidden" name="csrf_token" value="{token}">
<label>API key <input type="password" name="api_key" autocomplete="off" required></label>
<button type="submit">Sign in</button>
</form></body></html>
"""


def _secure(req: falcon.Request) -> bool:
    return req.scheme == "https" or req.get_header("X-Forwarded-Proto") == "https"


class LoginResource:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.window = SlidingWindow(sessions)

    def _throttle(self, req: falcon.Request, what: str, limit: Limit) -> None:
        """429 once this client address has used ``limit`` (the peer's address: headers can be forged)."""
        admission = self.window.acquire(f"{what}:{req.remote_addr}", limit)
        if not admission.admitted:
            raise falcon.HTTPTooManyRequests(
                title="Too many sign-in attempts",
                description=f"At most {limit.count} per {limit.period:g} s from one address; try again later.",
                retry_after=max(1, math.ceil(admission.wait)),
            )

    def _form(self, req: falcon.Request, resp: falcon.Response, message: str) -> None:
        with self.sessions.begin() as session:
            token = issue_sign_in_token(session, lifetime=timedelta(seconds=FORM_SECONDS))
        resp.set_cookie(
            FORM_COOKIE,
            token,
            max_age=FORM_SECONDS,
            path="/login",
            http_only=True,
            secure=_secure(req),
            same_site="Strict",
        )
        nonce = protect_page(resp)
        resp.content_type = falcon.MEDIA_HTML
        resp.text = FORM.replace(CSP_NONCE, nonce).format(message=html.escape(message), token=token)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._throttle(req, "sign-in-form", SIGN_IN_FORMS)
        self._form(req, resp, "Sign in with an API key that has the read scope.")

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._throttle(req, "sign-in", SIGN_IN_ATTEMPTS)
        raw = req.bounded_stream.read(MAX_FORM_BYTES + 1)
        if len(raw) > MAX_FORM_BYTES:
            raise falcon.HTTPContentTooLarge(title="Form too large", description="The sign-in form is too large.")
        try:
            fields = parse_qs(raw.decode("utf-8", "replace"), max_num_fields=10)
        except ValueError as exc:
            raise falcon.HTTPBadRequest(
                title="Invalid form", description="The sign-in form has too many fields."
            ) from exc
        sent = (fields.get("csrf_token") or [""])[0]
        expected = (req.get_cookie_values(FORM_COOKIE) or [""])[0]
        with self.sessions.begin() as session:
            valid = bool(expected) and same_secret(sent, expected) and use_sign_in_token(session, expected)
        if not valid:
            resp.status = falcon.HTTP_403
            self._form(req, resp, "The form expired or was already used; please sign in again.")
            return
        key = (fields.get("api_key") or [""])[0].strip()
        with self.sessions.begin() as session:
            record = find_key(session, key) if key else None
            cookie = start_session(session, record.id, lifetime=timedelta(seconds=SESSION_SECONDS)) if record else None
        if cookie is None:
            resp.status = falcon.HTTP_401
            self._form(req, resp, "That API key is unknown or revoked.")
            return
        resp.unset_cookie(FORM_COOKIE, path="/login")
        resp.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=SESSION_SECONDS,
            path="/",
            http_only=True,
            secure=_secure(req),
            same_site="Strict",
        )
        resp.status = falcon.HTTP_303
        resp.location = "/"


class LogoutResource:
    """Ends the session on the server (its cookie opens nothing afterwards) and clears the cookie."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        for cookie in req.get_cookie_values(SESSION_COOKIE) or []:
            with self.sessions.begin() as session:
                end_session(session, cookie)
        resp.unset_cookie(SESSION_COOKIE, path="/")
        resp.status = falcon.HTTP_303
        resp.location = "/login"
