"""Scraper agent: fetches the pages named in ``context.urls`` (none given, nothing fetched)."""

from __future__ import annotations

from typing import Any

from actors.catalogue import workflow
from actors.context import TaskContext
from actors.errors import InvalidInput
from actors.tools.scraping import scrape

__all__ = ["scraper_agent"]


@workflow("scraper", queue="scraper", max_retries=5)
def scraper_agent(ctx: TaskContext) -> dict[str, Any]:
    """Extract title and text from each URL, through the safe, cached scrape tool."""
    urls = ctx.context.get("urls") or []
    if not isinstance(urls, list) or not all(isinstance(url, str) for url in urls):
        raise InvalidInput("context.urls must be a list of URL strings")
    pages = []
    for index, url in enumerate(urls):
        ctx.progress(int(100 * index / len(urls)), "scraping", url=url)
        pages.append(scrape(url, settings=ctx.settings, sessions=ctx.runtime.sessions))
    return {"agent": "scraper", "status": "success", "data": pages}
