"""``/keys``: an admin lists, creates and revokes its own tenant's API keys."""

from __future__ import annotations

from typing import Any

import falcon
from sqlalchemy.orm import Session, sessionmaker

from models.security import create_key, list_keys, revoke_key

from .auth import tenant_of, visible_tenants
from .presenters import key_view
from .schemas import KEY_REQUEST
from .validation import validate

__all__ = ["KeysResource", "KeyResource"]


class KeysResource:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        everyone = visible_tenants(req) is None
        with self.sessions() as session:
            keys = [key_view(k) for k in list_keys(session, tenant=None if everyone else tenant_of(req))]
        resp.media = {"keys": keys}

    @validate(req_schema=KEY_REQUEST)
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body: dict[str, Any] = req.get_media()
        tenant = tenant_of(req)
        if body.get("tenant", tenant) != tenant and visible_tenants(req) is not None:
            raise falcon.HTTPForbidden(
                title="Other tenant", description="A key can create keys of its own tenant only."
            )
        with self.sessions.begin() as session:
            new = create_key(session, tenant=body.get("tenant", tenant), scopes=body["scopes"])
            view = key_view(new.record)
        resp.status = falcon.HTTP_201
        resp.media = {**view, "key": new.key}


class KeyResource:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def on_delete(self, req: falcon.Request, resp: falcon.Response, key_id: str) -> None:
        everyone = visible_tenants(req) is None
        with self.sessions.begin() as session:
            revoked = revoke_key(session, key_id, tenant=None if everyone else tenant_of(req))
        if not revoked:
            raise falcon.HTTPNotFound(title="Unknown key", description=f"No active key has the id {key_id!r}.")
        resp.media = {"id": key_id, "revoked": True}
