"""The dashboard's sign-in: ``/login`` takes an API key once and sets a signed session cookie.

The cookie is HttpOnly and SameSite=Strict and holds only the key's id, an expiry and an HMAC;
requests it authenticates that change something must also send the CSRF token (see
``web.auth``). The sign-in form itself is protected by a one-time token tied to a cookie.
"""

from __future__ import annotations

import hmac
import html
import secrets
from urllib.parse import parse_qs

import falcon
from sqlalchemy.orm import Session, sessionmaker

from models.security import find_key

from .auth import SESSION_COOKIE, SESSION_SECONDS, SessionSigner

__all__ = ["LoginResource", "LogoutResource"]

FORM_COOKIE = "interlock_login"
MAX_FORM_BYTES = 4096

FORM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Interlock: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font: 14px system-ui, sans-serif; margin: 40px">
<h1>Interlock</h1><p>{message}</p>
<form method="post" action="/login">
<input type="hidden" name="csrf_token" value="{token}">
<label>API key <input type="password" name="api_key" autocomplete="off" required></label>
<button type="submit">Sign in</button>
</form></body></html>
"""


def _secure(req: falcon.Request) -> bool:
    return req.scheme == "https" or req.get_header("X-Forwarded-Proto") == "https"


def _form(req: falcon.Request, resp: falcon.Response, message: str) -> None:
    token = secrets.token_urlsafe(24)
    resp.set_cookie(
        FORM_COOKIE, token, max_age=900, path="/login", http_only=True, secure=_secure(req), same_site="Strict"
    )
    resp.content_type = falcon.MEDIA_HTML
    resp.set_header("Cache-Control", "no-store")
    resp.text = FORM.format(message=html.escape(message), token=token)


class LoginResource:
    def __init__(self, sessions: sessionmaker[Session], signer: SessionSigner) -> None:
        self.sessions = sessions
        self.signer = signer

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _form(req, resp, "Sign in with an API key that has the read scope.")

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
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
        if not expected or not hmac.compare_digest(sent, expected):
            resp.status = falcon.HTTP_403
            _form(req, resp, "The form expired; please sign in again.")
            return
        key = (fields.get("api_key") or [""])[0].strip()
        with self.sessions.begin() as session:
            record = find_key(session, key) if key else None
            key_id = record.id if record is not None else None
        if key_id is None:
            resp.status = falcon.HTTP_401
            _form(req, resp, "That API key is unknown or revoked.")
            return
        resp.unset_cookie(FORM_COOKIE, path="/login")
        resp.set_cookie(
            SESSION_COOKIE,
            self.signer.sign(key_id),
            max_age=SESSION_SECONDS,
            path="/",
            http_only=True,
            secure=_secure(req),
            same_site="Strict",
        )
        resp.status = falcon.HTTP_303
        resp.location = "/"


class LogoutResource:
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.unset_cookie(SESSION_COOKIE, path="/")
        resp.status = falcon.HTTP_303
        resp.location = "/login"
