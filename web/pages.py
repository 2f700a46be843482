"""Headers for the HTML pages the API serves (the dashboard and the sign-in form).

A strict Content-Security-Policy: scripts and styles run only from the page's own ``<script>`` and
``<style>`` elements, which carry a fresh nonce in every answer, so markup injected into a page
cannot run; requests go only to this origin; no site may frame the pages (clickjacking).
"""

from __future__ import annotations

import secrets

import falcon

__all__ = ["protect_page", "CSP_NONCE"]

#: The placeholder in a page's markup replaced by the answer's nonce.
CSP_NONCE = "__CSP_NONCE__"

POLICY = (
    "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def protect_page(resp: falcon.Response) -> str:
    """Set the security headers of an HTML answer; returns the nonce its inline script and style carry."""
    nonce = secrets.token_urlsafe(18)
    resp.set_header("Content-Security-Policy", POLICY.format(nonce=nonce))
    resp.set_header("X-Frame-Options", "DENY")
    resp.set_header("X-Content-Type-Options", "nosniff")
    resp.set_header("Referrer-Policy", "same-origin")
    resp.set_header("Cache-Control", "no-store")
    return nonce
