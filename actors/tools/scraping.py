"""The ``scrape_url`` tool: one HTML page, fetched through the SSRF guard, as its title and readable text.

Within a task the fetch runs in a helper thread that the task's time limit or cancellation stops
waiting for (``actors.running.interruptible``), under the host's circuit breaker, and its result
is cached (``INTERLOCK_CACHE_TTL_SCRAPE``).
"""

from __future__ import annotations

import logging
from typing import Any

import requests
from bs4 import BeautifulSoup
from sqlalchemy.orm import Session, sessionmaker

from actors.errors import PermanentError
from actors.running import interruptible
from actors.tools.cache import cached_call
from actors.tools.catalogue import URL_SCHEMA, tool
from actors.tools.circuit_breaker import under_breaker
from actors.tools.http_safety import guarded_get, raise_for_status, read_capped
from interlock.settings import Settings

__all__ = ["scrape_url", "scrape", "fetch_page", "extract_text", "CONTENT_CHARS", "HTML_TYPES"]

logger = logging.getLogger(__name__)

#: How much of the page text a result carries (the reference article's 5,000 characters).
CONTENT_CHARS = 5000
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
NOT_TEXT = ("script", "style", "noscript", "template", "iframe", "object", "svg")


@tool(
    "scrape_url",
    schema={
        "type": "object",
        "title": "scrape_url",
        "properties": {"url": URL_SCHEMA},
        "required": ["url"],
        "additionalProperties": False,
    },
)
def scrape_url(args: dict[str, Any], *, settings: Settings, sessions: sessionmaker[Session]) -> dict[str, Any]:
    """Fetch an HTML page and return its title and readable text."""
    return scrape(args["url"], settings=settings, sessions=sessions)


def scrape(url: str, *, settings: Settings, sessions: sessionmaker[Session]) -> dict[str, Any]:
    """``{url, title, content, length, cached}`` of the HTML page at ``url``."""
    return cached_call(
        sessions,
        "scrape_url",
        {"url": url},
        ttl=settings.cache_ttl_scrape,
        call=under_breaker(
            sessions,
            url,
            settings=settings,
            call=lambda: interruptible("scrape_url call", fetch_page, url, settings=settings),
        ),
    )


def extract_text(html: bytes | str, *, encoding: str | None = None) -> tuple[str, str]:
    """(title, readable text) of an HTML document, without scripts, styles and other non-text."""
    soup = BeautifulSoup(html, "lxml", from_encoding=encoding if isinstance(html, bytes) else None)
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for element in soup(NOT_TEXT):
        element.decompose()
    root = soup.body or soup
    lines = (" ".join(line.split()) for line in root.get_text("\n").splitlines())
    return title, "\n".join(line for line in lines if line)


def fetch_page(url: str, *, settings: Settings) -> dict[str, Any]:
    """``{url, title, content (first 5,000 characters), length}`` of the HTML page at ``url``."""
    response = guarded_get(url, settings=settings, headers={"Accept": "text/html,application/xhtml+xml"})
    raise_for_status(response, what=url)
    content_type = response.headers.get("Content-Type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type not in HTML_TYPES:
        response.close()
        raise PermanentError(
            f"{url} is not an HTML page (Content-Type {content_type or 'missing'!r}); scrape_url reads HTML only"
        )
    body = read_capped(response, limit=settings.scrape_max_bytes, what=url, setting="INTERLOCK_SCRAPE_MAX_BYTES")
    # An encoding in the header wins; otherwise the parser reads <meta charset> or sniffs.
    declared = requests.utils.get_encoding_from_headers(response.headers) if "charset" in content_type else None
    title, text = extract_text(body, encoding=declared)
    result: dict[str, Any] = {"url": url, "title": title, "content": text[:CONTENT_CHARS], "length": len(text)}
    if response.url != url:
        result["final_url"] = response.url
    return result
