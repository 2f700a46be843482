"""Webhook signatures: HMAC-SHA256 over the raw body, compared in constant time.

GitHub (``X-Hub-Signature-256: sha256=<hex>``) and Interlock's custom webhook
(``X-Interlock-Signature-256: sha256=<hex>``) sign the body; Slack signs ``v0:<timestamp>:<body>``
(``X-Slack-Signature: v0=<hex>``) and sends the timestamp, which must be recent.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = [
    "InvalidSignature",
    "SLACK_TOLERANCE",
    "sha256_signature",
    "check_sha256_signature",
    "slack_signature",
    "check_slack_signature",
]

#: Slack requests older (or newer) than this many seconds are refused: a replayed request fails.
SLACK_TOLERANCE = 300


class InvalidSignature(Exception):
    """The request is not signed with the configured secret; the reason says why."""


def _hmac_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def sha256_signature(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of body>``, as GitHub and the custom webhook send it."""
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
    try:
        sent = int(timestamp)
    except ValueError:
        raise InvalidSignature("X-Slack-Request-Timestamp is not a Unix time") from None
    if abs(now - sent) > tolerance:
        raise InvalidSignature(f"the request timestamp is more than {tolerance:g} seconds away from now")
    if not _same(slack_signature(secret, timestamp, body), signature.strip()):
        raise InvalidSignature("the X-Slack-Signature signature does not match the body")
