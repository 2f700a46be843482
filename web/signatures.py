"""Webhook signatures: HMAC-SHA256 over the raw body (and what else a scheme signs), in constant time.

GitHub (``X-Hub-Signature-256: sha256=<hex>``) signs only the body. Slack signs
``v0:<timestamp>:<body>`` (``X-Slack-Signature: v0=<hex>``) and Interlock's custom webhook signs
``v1:<timestamp>:<delivery id>:<body>`` (``X-Interlock-Signature-256: v1=<hex>``); both send the
timestamp, which must be within five minutes of now, so a captured request cannot be replayed
later, and the custom scheme's delivery id (deduplicated) cannot be changed to replay it sooner.
"""

from __future__ import annotations

import hashlib
import hmac

from interlock.errors import InterlockError

__all__ = [
    "InvalidSignature",
    "SLACK_TOLERANCE",
    "TOLERANCE",
    "sha256_signature",
    "check_sha256_signature",
    "slack_signature",
    "check_slack_signature",
    "custom_base_string",
    "custom_signature",
    "check_custom_signature",
]

#: Signed requests whose timestamp is further than this many seconds from now are refused.
TOLERANCE = 300
#: Slack's own name for it (Slack documents five minutes).
SLACK_TOLERANCE = TOLERANCE


class InvalidSignature(InterlockError):
    """The request is not signed with the configured secret; the reason says why."""


def _hmac_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def sha256_signature(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of body>``, as GitHub sends it."""
    return "sha256=" + _hmac_hex(secret, body)


def check_sha256_signature(secret: str, body: bytes, header: str | None, *, header_name: str) -> None:
    if not header:
        raise InvalidSignature(f"the {header_name} header is missing")
    if not _same(sha256_signature(secret, body), header.strip()):
        raise InvalidSignature(f"the {header_name} signature does not match the body")


def slack_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``v0=<hex HMAC-SHA256 of "v0:{timestamp}:{body}">``, Slack's signing scheme."""
    return "v0=" + _hmac_hex(secret, b"v0:" + timestamp.encode() + b":" + body)


def check_slack_signature(
    secret: str,
    body: bytes,
    *,
    timestamp: str | None,
    signature: str | None,
    now: float,
    tolerance: float = SLACK_TOLERANCE,
) -> None:
    if not timestamp or not signature:
        raise InvalidSignature("the X-Slack-Request-Timestamp or X-Slack-Signature header is missing")
    _check_fresh(timestamp, "X-Slack-Request-Timestamp", now=now, tolerance=tolerance)
    if not _same(slack_signature(secret, timestamp, body), signature.strip()):
        raise InvalidSignature("the X-Slack-Signature signature does not match the body")


def _check_fresh(timestamp: str, header_name: str, *, now: float, tolerance: float) -> None:
    """The timestamp is whole Unix seconds within ``tolerance`` of ``now`` (either way)."""
    if not timestamp.isascii() or not timestamp.isdigit():
        raise InvalidSignature(f"{header_name} is not a Unix time (whole seconds)")
    if abs(now - int(timestamp)) > tolerance:
        raise InvalidSignature(
            f"the request timestamp ({header_name}) is more than {tolerance:g} seconds away from now: "
            "a replayed or delayed request, or a clock out of sync"
        )


def custom_base_string(timestamp: str, delivery_id: str, body: bytes) -> bytes:
    """What the custom webhook signs: ``v1:<timestamp>:<delivery id>:<body>``."""
    return b"v1:" + timestamp.encode() + b":" + delivery_id.encode() + b":" + body


def custom_signature(secret: str, timestamp: str, delivery_id: str, body: bytes) -> str:
    """``v1=<hex HMAC-SHA256 of "v1:{timestamp}:{delivery_id}:{body}">``: what a sender puts in
    ``X-Interlock-Signature-256``."""
    return "v1=" + _hmac_hex(secret, custom_base_string(timestamp, delivery_id, body))


def check_custom_signature(
    secret: str,
    body: bytes,
    *,
    timestamp: str | None,
    delivery_id: str | None,
    signature: str | None,
    now: float,
    tolerance: float = TOLERANCE,
) -> None:
    """Interlock's scheme: a recent ``X-Interlock-Timestamp`` and the ``X-Interlock-Delivery`` id are
    signed with the body, so neither can be changed to replay a captured request."""
    if not timestamp or not delivery_id or not signature:
        missing = [
            name
            for name, value in (
                ("X-Interlock-Timestamp", timestamp),
                ("X-Interlock-Delivery", delivery_id),
                ("X-Interlock-Signature-256", signature),
            )
            if not value
        ]
        raise InvalidSignature(f"missing header(s): {', '.join(missing)}")
    _check_fresh(timestamp, "X-Interlock-Timestamp", now=now, tolerance=tolerance)
    if not signature.strip().startswith("v1="):
        raise InvalidSignature(
            "X-Interlock-Signature-256 must be v1=<hex HMAC-SHA256 of 'v1:{timestamp}:{delivery id}:{body}'> "
            "(the body-only sha256= scheme is no longer accepted)"
        )
    if not _same(custom_signature(secret, timestamp, delivery_id, body), signature.strip()):
        raise InvalidSignature(
            "the X-Interlock-Signature-256 signature does not match the timestamp, delivery id and body"
        )
