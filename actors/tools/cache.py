"""Tool results cached in the database, keyed by tool and the SHA-256 of its canonical arguments.

A cached answer carries ``cached: true`` and costs no network call. Only successful results are
kept; errors always reach the caller. Each tool has its own TTL (``INTERLOCK_CACHE_TTL_*``; 0
turns caching off for that tool) and :func:`purge_expired_cache` is the cleanup job's work.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from models.base import utcnow
from models.tool_cache import get_cached, purge_expired_cache, store_cached

__all__ = ["cache_key", "cached_call", "purge_expired_cache"]


def cache_key(args: Any) -> str:
    """SHA-256 of the arguments as canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def cached_call(
    sessions: sessionmaker[Session],
    tool: str,
    args: dict[str, Any],
    *,
    ttl: float,
    call: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """The cached result of ``tool(args)`` if one is fresh, else ``call()``'s, stored for ``ttl`` s.

    No transaction is held while ``call`` runs: lookup and store are two short ones.
    """
    if ttl <= 0:
        return {**call(), "cached": False}
    key = cache_key(args)
    with sessions() as session:
        hit = get_cached(session, tool, key)
    if hit is not None:
        return {**hit, "cached": True}
    value = call()
    with sessions.begin() as session:
        store_cached(session, tool, key, value, expires_at=utcnow() + timedelta(seconds=ttl))
    return {**value, "cached": False}
