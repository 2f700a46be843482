"""Looking at data sources: a URL (conditional GET, ETag / Last-Modified, else a hash of the body)
and a SQL query (a hash of its result). Whether that is a change is decided against what was seen
last time (``models.events.MonitorState``), never by chance.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import requests
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

__all__ = ["Observation", "source_key", "observe_url", "observe_sql", "is_change"]


@dataclass(frozen=True)
class Observation:
    etag: str | None = None
    last_modified: str | None = None
    sha256: str | None = None
    not_modified: bool = False  # the server answered 304 to our conditional request


def source_key(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def observe_url(
    http: requests.Session,
    url: str,
    *,
    previous: Observation | None,
    timeout: float,
) -> Observation:
    """GET ``url`` conditionally; the body is hashed as it streams in, never held whole."""
    headers = {}
    if previous is not None and previous.etag:
        headers["If-None-Match"] = previous.etag
    if previous is not None and previous.last_modified:
        headers["If-Modified-Since"] = previous.last_modified
    with http.get(url, headers=headers, timeout=timeout, stream=True) as response:
        if response.status_code == 304 and previous is not None:
            return Observation(previous.etag, previous.last_modified, previous.sha256, not_modified=True)
        response.raise_for_status()
        digest = hashlib.sha256()
        for chunk in response.iter_content(chunk_size=65536):
            digest.update(chunk)
        return Observation(response.headers.get("ETag"), response.headers.get("Last-Modified"), digest.hexdigest())


def observe_sql(database_url: str, query: str, *, timeout: float) -> Observation:
    """Run ``query`` in a read-only transaction (rolled back) and hash its rows."""
    for prefix in ("postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            database_url = "postgresql+psycopg://" + database_url[len(prefix) :]
    postgres = database_url.startswith("postgresql")
    engine = create_engine(
        database_url,
        poolclass=NullPool,
        connect_args={"connect_timeout": max(1, int(timeout))} if postgres else {},
    )
    try:
        with engine.connect() as connection:
            if postgres:
                connection.execute(text("SET TRANSACTION READ ONLY"))
                connection.execute(
                    text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": str(int(timeout * 1000))}
                )
            rows = [list(row) for row in connection.execute(text(query))]
            connection.rollback()
    finally:
        engine.dispose()
    encoded = json.dumps(rows, default=str, separators=(",", ":")).encode()
    return Observation(sha256=hashlib.sha256(encoded).hexdigest())


def is_change(previous: Observation | None, seen: Observation) -> bool:
    """Compare by ETag when both have one, else by Last-Modified, else by content hash.

    The first observation of a source is its baseline, not a change.
    """
    if previous is None or seen.not_modified:
        return False
    if seen.etag and previous.etag:
        return seen.etag != previous.etag
    if seen.last_modified and previous.last_modified:
        return seen.last_modified != previous.last_modified
    return seen.sha256 != previous.sha256
