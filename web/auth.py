"""Authentication and authorisation of every route, in one Falcon middleware and one scope table.

A request is authenticated by ``Authorization: Bearer <key>`` or by the dashboard's session cookie
(a random token whose session lives in the database; unsafe requests must also carry the CSRF
token). Each (route template, method) names the scope it needs in :data:`ROUTE_SCOPES` (``None``:
public); a route missing from the table needs ``admin``, so a new route is never open by accident.
Routes that describe every tenant at once are for operators only (:data:`OPERATOR_ROUTES`). A task
id in the path that belongs to another tenant answers 404, exactly like an unknown id. The caller's
:class:`Principal` is put in ``req.context.principal`` for responders to filter lists and own new work.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import falcon
from sqlalchemy.orm import Session, sessionmaker

from models.database import autocommit
from models.security import SYSTEM_TENANT, ApiKey, KeyIdentity, identify_key
from models.task_queries import task_tenant
from models.web_sessions import session_identity

__all__ = [
    "Auth",
    "Principal",
    "ROUTE_SCOPES",
    "OPERATOR_ROUTES",
    "csrf_token_of",
    "same_secret",
    "principal_of",
    "tenant_of",
    "visible_tenants",
    "SESSION_COOKIE",
    "CSRF_HEADER",
    "KeyCache",
]

logger = logging.getLogger(__name__)

#: Tenant of everything done while authentication is off.
DEFAULT_TENANT = "default"
SESSION_COOKIE = "interlock_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_SECONDS = 12 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Path parameters that name a task (a workflow's id is its task id).
TASK_PARAMS = ("task_id", "workflow_id")

#: The scope each route and method needs; ``None`` is public. Tests fail for a route not listed.
ROUTE_SCOPES: dict[tuple[str, str], str | None] = {
    ("/agent/execute", "POST"): "submit",
    ("/agent/status/{task_id}", "GET"): "read",
    ("/agent/result/{task_id}", "GET"): "read",
    ("/agent/history/{workflow_id}", "GET"): "read",
    ("/agent/resume/{workflow_id}", "POST"): "submit",
    ("/agent/cancel/{task_id}", "POST"): "submit",
    ("/agent/stream/{task_id}", "GET"): "read",
    ("/tools/{name}", "POST"): "submit",
    ("/dlq", "GET"): "admin",
    ("/dlq", "DELETE"): "admin",
    ("/dlq/replay", "POST"): "admin",
    ("/dlq/{task_id}", "DELETE"): "admin",
    ("/dlq/{task_id}/replay", "POST"): "admin",
    ("/events", "GET"): "admin",
    ("/events", "POST"): "admin",
    ("/keys", "GET"): "admin",
    ("/keys", "POST"): "admin",
    ("/keys/{key_id}", "DELETE"): "admin",
    ("/metrics", "GET"): "metrics",
    ("/", "GET"): "read",
    ("/static/{name}", "GET"): None,  # the dashboard's scripts and styles: no data
    ("/dashboard/api/tasks", "GET"): "read",
    ("/dashboard/api/tasks/{task_id}", "GET"): "read",
    ("/dashboard/api/tasks/{task_id}/events", "GET"): "read",
    ("/dashboard/api/overview", "GET"): "read",
    ("/dashboard/api/charts", "GET"): "read",
    ("/dashboard/api/workers", "GET"): "read",
    ("/login", "GET"): None,
    ("/login", "POST"): None,
    ("/logout", "POST"): None,
    ("/webhook/github", "POST"): None,
    ("/webhook/slack", "POST"): None,
    ("/webhook/custom", "POST"): None,
    ("/healthz", "GET"): None,
    ("/readyz", "GET"): None,
    ("/openapi.json", "GET"): None,
    ("/docs", "GET"): None,
}

#: Routes whose answers describe every tenant at once: only operators (keys of the ``system``
#: tenant) may call them, whatever their scopes. A tenant's keys get 403.
OPERATOR_ROUTES = frozenset({("/metrics", "GET"), ("/dashboard/api/workers", "GET")})

#: Pages a browser opens: without a session they send it to the sign-in form instead of a 401.
LOGIN_REDIRECTS = frozenset({"/"})


@dataclass(frozen=True)
class Principal:
    """Who is calling: their tenant, their scopes and the tenants whose data they may see."""

    tenant: str
    scopes: frozenset[str]
    key_id: str | None = None
    #: ``None``: every tenant (a system operator: authentication off, or an admin key of ``system``).
    tenants: frozenset[str] | None = None

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    @property
    def operator(self) -> bool:
        """Runs the installation, not one tenant's work: a ``system`` key, or anyone with auth off."""
        return self.tenants is None or self.tenant == SYSTEM_TENANT

    @classmethod
    def of_key(cls, key: ApiKey | KeyIdentity) -> Principal:
        """A tenant's admin also sees the system's work; the system's admin is the operator: all of it."""
        scopes = frozenset(key.scopes)
        if key.tenant == SYSTEM_TENANT and "admin" in scopes:
            return cls(key.tenant, scopes, key.id, None)
        tenants = {key.tenant} | ({SYSTEM_TENANT} if "admin" in scopes else set())
        return cls(key.tenant, scopes, key.id, frozenset(tenants))


ANONYMOUS_ADMIN = Principal(DEFAULT_TENANT, frozenset({"admin"}), None, None)


def principal_of(req: falcon.Request) -> Principal:
    principal = getattr(req.context, "principal", None)
    return principal if isinstance(principal, Principal) else ANONYMOUS_ADMIN


def tenant_of(req: falcon.Request) -> str:
    """The tenant that owns what this request creates."""
    return principal_of(req).tenant


def visible_tenants(req: falcon.Request) -> Collection[str] | None:
    """The tenants whose data this request may see (``None``: all of them)."""
    return principal_of(req).tenants


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of two texts as bytes (``compare_digest`` refuses non-ASCII ``str``)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def csrf_token_of(cookie: str) -> str:
    """The CSRF token of a session: derived from its cookie, which scripts on other sites cannot read."""
    return hmac.new(cookie.encode("utf-8", "surrogatepass"), b"interlock csrf", hashlib.sha256).hexdigest()


def _unauthorized(description: str) -> falcon.HTTPUnauthorized:
    return falcon.HTTPUnauthorized(title="Authentication required", description=description, challenges=["Bearer"])


class KeyCache:
    """API keys this process identified in the last ``seconds``: a key's lookup costs a database
    round trip, and a client sends the same key on every request.

    Only keys that were found are kept (an unknown key is looked up every time, so a flood of made-up
    keys fills nothing), by the SHA-256 of the key, never the key itself. The price: a revoked key
    keeps working in a process that identified it for at most ``seconds``.
    """

    #: Entries at most; the cache is emptied when full (clients hold few keys each).
    MAX_ENTRIES = 10_000

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: dict[bytes, tuple[float, KeyIdentity]] = {}

    def identify(self, key: str, lookup: Callable[[str], KeyIdentity | None]) -> KeyIdentity | None:
        if self.seconds <= 0:
            return lookup(key)
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        now = self.clock()
        with self._lock:
            entry = self._entries.get(digest)
        if entry is not None and now < entry[0]:
            return entry[1]
        identity = lookup(key)
        with self._lock:
            if identity is None:
                self._entries.pop(digest, None)
            else:
                if len(self._entries) >= self.MAX_ENTRIES:
                    self._entries.clear()
                self._entries[digest] = (now + self.seconds, identity)
        return identity


class Auth:
    """The middleware: authenticate, check the route's scope, hide other tenants' tasks."""

    def __init__(self, sessions: sessionmaker[Session], *, enabled: bool, key_cache_seconds: float = 0.0) -> None:
        self.sessions = sessions
        self.enabled = enabled
        self.keys = KeyCache(key_cache_seconds)

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
    ) -> None:
        if resource is None or req.uri_template is None:
            return  # no route: Falcon answers 404
        key = (req.uri_template, req.method)
        if key not in ROUTE_SCOPES and not hasattr(resource, f"on_{req.method.lower()}"):
            return  # Falcon's own 405 or OPTIONS answer
        scope = ROUTE_SCOPES.get(key, "admin")
        if not self.enabled:
            req.context.principal = ANONYMOUS_ADMIN
            return
        if scope is None:
            return
        principal = self._authenticate(req)
        if principal is None:
            if req.uri_template in LOGIN_REDIRECTS and req.method == "GET":
                raise falcon.HTTPSeeOther("/login")
            raise _unauthorized("Send an API key as `Authorization: Bearer <key>` (see `interlock keys create`).")
        if not principal.allows(scope):
            raise falcon.HTTPForbidden(
                title="Missing scope", description=f"This route needs a key with the {scope!r} scope."
            )
        if key in OPERATOR_ROUTES and not principal.operator:
            raise falcon.HTTPForbidden(
                title="Operators only",
                description=f"{req.uri_template} covers every tenant: it needs a key of the {SYSTEM_TENANT!r} tenant.",
            )
        req.context.principal = principal
        self._check_tenant(principal, params)

    def _authenticate(self, req: falcon.Request) -> Principal | None:
        header = req.get_header("Authorization")
        if header is not None:
            kind, _, token = header.partition(" ")
            if kind.lower() != "bearer" or not token.strip():
                raise _unauthorized("The Authorization header must be `Bearer <key>`.")
            identity = self.keys.identify(token.strip(), self._lookup_key)
            if identity is None:
                raise _unauthorized("The API key is unknown or revoked.")
            return Principal.of_key(identity)
        cookie = req.get_cookie_values(SESSION_COOKIE)
        if not cookie:
            return None
        with autocommit(self.sessions) as connection:
            identity = session_identity(connection, cookie[0])
        if identity is None:
            return None  # never issued, signed out, expired, or its key was revoked
        token = csrf_token_of(cookie[0])
        req.context.csrf_token = token
        if req.method not in SAFE_METHODS and not same_secret(req.get_header(CSRF_HEADER) or "", token):
            raise falcon.HTTPForbidden(
                title="CSRF token missing", description=f"Requests signed in by cookie must send {CSRF_HEADER}."
            )
        return Principal.of_key(identity)

    def _lookup_key(self, key: str) -> KeyIdentity | None:
        with autocommit(self.sessions) as connection:  # one round trip: no BEGIN/COMMIT
            return identify_key(connection, key)

    def _check_tenant(self, principal: Principal, params: dict[str, Any]) -> None:
        if principal.tenants is None:
            return
        for name in TASK_PARAMS:
            task_id = params.get(name)
            if not isinstance(task_id, str) or len(task_id) > 36 or "\x00" in task_id:
                continue
            with self.sessions() as session:
                tenant = task_tenant(session, task_id)
            if tenant is not None and tenant not in principal.tenants:
                raise falcon.HTTPNotFound(title="Unknown task", description=f"No task has the id {task_id!r}.")
