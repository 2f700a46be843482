"""Webhook signature checks against the providers' own documented examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from web.signatures import (
    InvalidSignature,
    check_custom_signature,
    check_sha256_signature,
    check_slack_signature,
    custom_base_string,
    custom_signature,
    sha256_signature,
    slack_signature,
)

# https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries#testing-the-webhook-payload-validation
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

# https://api.slack.com/authentication/verifying-requests-from-slack
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_TIMESTAMP = "1531420618"
SLACK_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
SLACK_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def github(body: bytes, header: str | None, secret: str = GITHUB_SECRET) -> None:
    check_sha256_signature(secret, body, header, header_name="X-Hub-Signature-256")


def test_githubs_documented_example_passes() -> None:
    assert sha256_signature(GITHUB_SECRET, GITHUB_BODY) == GITHUB_SIGNATURE
    github(GITHUB_BODY, GITHUB_SIGNATURE)


@pytest.mark.parametrize(
    ("body", "header", "secret", "reason"),
    [
        (b"Hello, World?", GITHUB_SIGNATURE, GITHUB_SECRET, "does not match"),  # one byte changed
        (GITHUB_BODY, GITHUB_SIGNATURE, "It's a secret to everybody", "does not match"),
        (GITHUB_BODY, GITHUB_SIGNATURE.replace("757", "758"), GITHUB_SECRET, "does not match"),
        (GITHUB_BODY, GITHUB_SIGNATURE.removeprefix("sha256="), GITHUB_SECRET, "does not match"),
        (GITHUB_BODY, "sha1=" + GITHUB_SIGNATURE[7:], GITHUB_SECRET, "does not match"),
        (GITHUB_BODY, "sha256=\u00e9\u00e9", GITHUB_SECRET, "does not match"),
        (GITHUB_BODY, None, GITHUB_SECRET, "missing"),
        (GITHUB_BODY, "", GITHUB_SECRET, "missing"),
    ],
)
def test_github_signature_is_refused(body: bytes, header: str | None, secret: str, reason: str) -> None:
    with pytest.raises(InvalidSignature, match=reason):
        github(body, header, secret)


def test_slacks_documented_example_passes() -> None:
    assert slack_signature(SLACK_SECRET, SLACK_TIMESTAMP, SLACK_BODY) == SLACK_SIGNATURE
    check_slack_signature(
        SLACK_SECRET, SLACK_BODY, timestamp=SLACK_TIMESTAMP, signature=SLACK_SIGNATURE, now=int(SLACK_TIMESTAMP) + 10
    )


@pytest.mark.parametrize(
    ("body", "timestamp", "signature", "delay", "reason"),
    [
        (SLACK_BODY, SLACK_TIMESTAMP, SLACK_SIGNATURE, 600, "more than 300"),  # valid, ten minutes old
        (SLACK_BODY, SLACK_TIMESTAMP, SLACK_SIGNATURE, -600, "more than 300"),  # from the future
        (SLACK_BODY + b"x", SLACK_TIMESTAMP, SLACK_SIGNATURE, 0, "does not match"),
        (SLACK_BODY, str(int(SLACK_TIMESTAMP) + 1), SLACK_SIGNATURE, 0, "does not match"),
        (SLACK_BODY, "yesterday", SLACK_SIGNATURE, 0, "not a Unix time"),
        (SLACK_BODY, None, SLACK_SIGNATURE, 0, "missing"),
        (SLACK_BODY, SLACK_TIMESTAMP, None, 0, "missing"),
    ],
)
def test_slack_signature_is_refused(
    body: bytes, timestamp: str | None, signature: str | None, delay: int, reason: str
) -> None:
    with pytest.raises(InvalidSignature, match=reason):
        check_slack_signature(
            SLACK_SECRET, body, timestamp=timestamp, signature=signature, now=int(SLACK_TIMESTAMP) + delay
        )


# The worked example in docs/security.md (section Webhooks): the same values, the same signature.
CUSTOM_SECRET = "It's a Secret to Everybody"
CUSTOM_TIMESTAMP = "1767225600"
CUSTOM_DELIVERY = "4f9a2c1e-7b3d-4e8a-9c61-2d5f0b8e7a13"
CUSTOM_BODY = b'{"event_type": "environment_changed", "data": {"change_type": "api_rate_limit_increased"}}'
CUSTOM_SIGNATURE = "v1=757ab4f72b2a24476aceaa8eaedd1d594dd2b4d48ca33672d78875c78b9e779b"


def custom(
    body: bytes = CUSTOM_BODY,
    *,
    timestamp: str | None = CUSTOM_TIMESTAMP,
    delivery_id: str | None = CUSTOM_DELIVERY,
    signature: str | None = CUSTOM_SIGNATURE,
    delay: float = 10,
) -> None:
    check_custom_signature(
        CUSTOM_SECRET,
        body,
        timestamp=timestamp,
        delivery_id=delivery_id,
        signature=signature,
        now=int(CUSTOM_TIMESTAMP) + delay,
    )


def test_the_documented_custom_webhook_example_passes_and_is_in_the_docs() -> None:
    base = custom_base_string(CUSTOM_TIMESTAMP, CUSTOM_DELIVERY, CUSTOM_BODY)
    assert base == b"v1:1767225600:4f9a2c1e-7b3d-4e8a-9c61-2d5f0b8e7a13:" + CUSTOM_BODY
    assert custom_signature(CUSTOM_SECRET, CUSTOM_TIMESTAMP, CUSTOM_DELIVERY, CUSTOM_BODY) == CUSTOM_SIGNATURE
    custom()
    page = (Path(__file__).parents[2] / "docs" / "security.md").read_text()
    for value in (CUSTOM_TIMESTAMP, CUSTOM_DELIVERY, CUSTOM_BODY.decode(), CUSTOM_SIGNATURE, base.decode()):
        assert value in page, value


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"delay": 301}, "more than 300 seconds"),  # a captured request, replayed five minutes later
        ({"delay": -301}, "more than 300 seconds"),  # from the future
        ({"delivery_id": "another-delivery-id"}, "does not match"),  # replayed under a new delivery id
        ({"timestamp": str(int(CUSTOM_TIMESTAMP) + 5)}, "does not match"),  # a fresher timestamp, same signature
        ({"body": CUSTOM_BODY + b" "}, "does not match"),
        ({"signature": sha256_signature(CUSTOM_SECRET, CUSTOM_BODY)}, "no longer accepted"),  # the old scheme
        ({"signature": CUSTOM_SIGNATURE.replace("v1=", "v0=")}, "must be v1="),
        ({"timestamp": "1767225600.5"}, "not a Unix time"),
        ({"timestamp": None}, "missing header.*X-Interlock-Timestamp"),
        ({"delivery_id": ""}, "missing header.*X-Interlock-Delivery"),
        ({"signature": None}, "missing header.*X-Interlock-Signature-256"),
    ],
)
def test_custom_signature_is_refused(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidSignature, match=reason):
        custom(**changes)
