"""Webhooks from GitHub, Slack and custom senders, verified before anything parses their body.

Each reads the raw body itself (within ``INTERLOCK_MAX_BODY_BYTES``), checks its signature in
constant time (401 if missing, wrong or, for Slack and custom, more than five minutes old), then
publishes an event as the system tenant and answers ``202 {status: "accepted", event_id, task_ids}``.
A delivery seen before (GitHub's ``X-GitHub-Delivery`` or, for a day, the same body; Slack's
``event_id`` or ``trigger_id``; a custom ``X-Interlock-Delivery``) is answered
``200 {status: "duplicate"}`` and not processed again. An endpoint whose secret is not configured
answers 503: it is closed, not open.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

import falcon

from actors.errors import DuplicateDelivery
from actors.events.bus import Delivery, EventBus

from .errors import check_storable, strict_loads
from .schemas import EVENT_REQUEST
from .signatures import InvalidSignature, check_custom_signature, check_sha256_signature, check_slack_signature
from .validation import compile_schema, first_error

__all__ = ["GitHubWebhook", "SlackWebhook", "CustomWebhook", "read_raw_body"]

logger = logging.getLogger(__name__)

_EVENT_VALIDATOR = compile_schema(EVENT_REQUEST)

FORM = "application/x-www-form-urlencoded"
#: GitHub signs only the body: the same body again within this window is a replay (or a redelivery).
GITHUB_BODY_WINDOW = timedelta(days=1)
#: The dedupe key of a GitHub body (its SHA-256), next to ``github`` for ``X-GitHub-Delivery``.
GITHUB_BODY_PROVIDER = "github-body"
MAX_DELIVERY_ID = 255


def read_raw_body(req: falcon.Request, max_bytes: int) -> bytes:
    """The body exactly as sent (signatures are over these bytes), never more than ``max_bytes``."""
    body: bytes = req.bounded_stream.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise falcon.HTTPContentTooLarge(
            title="Request body too large", description=f"The body exceeds the limit of {max_bytes} bytes."
        )
    return body


def _word(value: str) -> str:
    """A provider's name for something, made a valid event-type word."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", value)[:60] or "unknown"


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = strict_loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise falcon.HTTPBadRequest(title="Malformed body", description=f"The {what} body is not JSON.") from None
    except ValueError as exc:
        raise falcon.HTTPBadRequest(title="Malformed body", description=f"The {what} body: {exc}") from None
    if not isinstance(value, dict):
        raise falcon.HTTPBadRequest(title="Malformed body", description=f"The {what} body is not a JSON object.")
    return value


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _form(body: bytes) -> dict[str, str]:
    try:
        pairs = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise falcon.HTTPBadRequest(title="Malformed body", description="The form body is not UTF-8.") from None
    form = {key: values[0] for key, values in pairs.items()}
    try:
        check_storable(form)
    except ValueError as exc:
        raise falcon.HTTPBadRequest(title="Malformed body", description=f"The form body: {exc}") from None
    return form


class _Webhook:
    provider = ""
    setting_env = ""

    def __init__(self, bus: EventBus, *, secret: str, max_body_bytes: int) -> None:
        self.bus = bus
        self._secret = secret
        self.max_body_bytes = max_body_bytes

    def _verified_body(self, req: falcon.Request) -> tuple[str, bytes]:
        if not self._secret:
            raise falcon.HTTPServiceUnavailable(
                title="Webhook not configured",
                description=f"{self.setting_env} is not set, so {req.path} refuses every request.",
            )
        return self._secret, read_raw_body(req, self.max_body_bytes)

    def _refuse(self, exc: InvalidSignature) -> falcon.HTTPUnauthorized:
        logger.warning("%s webhook refused: %s", self.provider, exc)
        return falcon.HTTPUnauthorized(title="Invalid signature", description=str(exc))

    def _accept(
        self,
        resp: falcon.Response,
        event_type: str,
        data: dict[str, Any],
        *,
        delivery_id: str | None,
        also: Sequence[Delivery] = (),
    ) -> None:
        deliveries = [Delivery(self.provider, delivery_id[:MAX_DELIVERY_ID])] if delivery_id else []
        try:
            event_id, task_ids = self.bus.publish(
                event_type, data, source=self.provider, deliveries=[*deliveries, *also]
            )
        except DuplicateDelivery as duplicate:
            logger.info("%s delivery %s seen before; not processed again", self.provider, delivery_id)
            resp.status = falcon.HTTP_200
            resp.media = {"status": "duplicate", "event_id": duplicate.event_id, "task_ids": []}
            return
        logger.info("%s webhook accepted as event %s (%s)", self.provider, event_id, event_type)
        resp.status = falcon.HTTP_202
        resp.media = {"status": "accepted", "event_id": event_id, "task_ids": task_ids}


class GitHubWebhook(_Webhook):
    """``POST /webhook/github``: publishes ``github.<X-GitHub-Event>``; ``ping`` is answered 200.

    GitHub signs the body only: not ``X-GitHub-Event``, not ``X-GitHub-Delivery``, and no time. So a
    captured body sent again under a new delivery id is recognised by its SHA-256 for a day.
    """

    provider = "github"
    setting_env = "INTERLOCK_GITHUB_WEBHOOK_SECRET"

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        secret, body = self._verified_body(req)
        try:
            check_sha256_signature(
                secret, body, req.get_header("X-Hub-Signature-256"), header_name="X-Hub-Signature-256"
            )
        except InvalidSignature as exc:
            raise self._refuse(exc) from None
        if (req.content_type or "").startswith(FORM):
            payload = _json_object(_form(body).get("payload", "").encode(), "GitHub form `payload`")
        else:
            payload = _json_object(body, "GitHub")
        event = req.get_header("X-GitHub-Event")
        if not event:
            raise falcon.HTTPBadRequest(title="Missing header", description="X-GitHub-Event is missing.")
        if event == "ping":
            resp.status = falcon.HTTP_200
            resp.media = {"status": "ok", "event": "ping", "hook_id": payload.get("hook_id")}
            return
        delivery_id = req.get_header("X-GitHub-Delivery")
        repository, sender = _mapping(payload.get("repository")), _mapping(payload.get("sender"))
        data = {
            "source": "github",
            "event_type": event,
            "delivery": delivery_id,
            "action": payload.get("action"),
            "repository": repository.get("full_name"),
            "sender": sender.get("login"),
            "payload": payload,
        }
        body_key = Delivery(GITHUB_BODY_PROVIDER, hashlib.sha256(body).hexdigest(), window=GITHUB_BODY_WINDOW)
        self._accept(resp, f"github.{_word(event)}", data, delivery_id=delivery_id, also=[body_key])


class SlackWebhook(_Webhook):
    """``POST /webhook/slack``: Events API (JSON) as ``slack.<event type>``, slash commands (form)
    as ``slack.command``, interactions as ``slack.interaction``; ``url_verification`` is answered."""

    provider = "slack"
    setting_env = "INTERLOCK_SLACK_SIGNING_SECRET"

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        secret, body = self._verified_body(req)
        try:
            check_slack_signature(
                secret,
                body,
                timestamp=req.get_header("X-Slack-Request-Timestamp"),
                signature=req.get_header("X-Slack-Signature"),
                now=time.time(),
            )
        except InvalidSignature as exc:
            raise self._refuse(exc) from None
        if (req.content_type or "").startswith(FORM):
            form = _form(body)
            form.pop("token", None)  # Slack's legacy verification token: a credential, not data
            if "payload" in form:
                payload = _json_object(form["payload"].encode(), "Slack interaction")
                payload.pop("token", None)
                user = _mapping(payload.get("user"))
                data = {
                    "source": "slack",
                    "event_type": payload.get("type"),
                    "user": user.get("id"),
                    "payload": payload,
                }
                self._accept(resp, "slack.interaction", data, delivery_id=payload.get("trigger_id"))
                return
            data = {**form, "source": "slack", "event_type": "command", "user": form.get("user_id")}
            self._accept(resp, "slack.command", data, delivery_id=form.get("trigger_id"))
            return
        payload = _json_object(body, "Slack")
        payload.pop("token", None)
        kind = payload.get("type")
        if kind == "url_verification":
            resp.status = falcon.HTTP_200
            resp.media = {"challenge": payload.get("challenge")}
            return
        if kind != "event_callback" or not isinstance(payload.get("event"), dict):
            resp.status = falcon.HTTP_200
            resp.media = {"status": "ignored", "type": kind}
            return
        event = payload["event"]
        data = {
            "source": "slack",
            "event_type": event.get("type"),
            "user": event.get("user"),
            "text": event.get("text"),
            "channel": event.get("channel"),
            "team_id": payload.get("team_id"),
            "event_id": payload.get("event_id"),
            "retry_num": req.get_header("X-Slack-Retry-Num"),
            "event": event,
        }
        self._accept(resp, f"slack.{_word(str(event.get('type')))}", data, delivery_id=payload.get("event_id"))


class CustomWebhook(_Webhook):
    """``POST /webhook/custom``: ``{event_type, data}`` signed with ``INTERLOCK_WEBHOOK_SECRET``.

    The signature covers ``v1:<X-Interlock-Timestamp>:<X-Interlock-Delivery>:<body>``; a timestamp
    more than five minutes away is refused and a delivery id seen before is a duplicate, so a
    captured request can be replayed neither later nor under another delivery id.
    """

    provider = "custom"
    setting_env = "INTERLOCK_WEBHOOK_SECRET"

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        secret, body = self._verified_body(req)
        delivery_id = req.get_header("X-Interlock-Delivery") or ""
        try:
            check_custom_signature(
                secret,
                body,
                timestamp=req.get_header("X-Interlock-Timestamp"),
                delivery_id=delivery_id,
                signature=req.get_header("X-Interlock-Signature-256"),
                now=time.time(),
            )
        except InvalidSignature as exc:
            raise self._refuse(exc) from None
        if len(delivery_id) > MAX_DELIVERY_ID or not (delivery_id.isascii() and delivery_id.isprintable()):
            raise falcon.HTTPBadRequest(
                title="Invalid header",
                description=f"X-Interlock-Delivery must be 1 to {MAX_DELIVERY_ID} printable ASCII characters.",
            )
        payload = _json_object(body, "webhook")
        error = first_error(_EVENT_VALIDATOR, payload)
        if error is not None:
            raise falcon.HTTPBadRequest(title="Invalid event", description=error.message)
        self._accept(resp, payload["event_type"], payload.get("data") or {}, delivery_id=delivery_id)
