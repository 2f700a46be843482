"""The jobs ``interlock scheduler`` enqueues: monitor data sources, apply retention, check health.

They run on workers like every workflow (the scheduler only enqueues) and are not submittable
through the API. Their outcomes are tasks and events, so ``GET /events`` audits them.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any, cast

import pika
import requests
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from actors.broker_nodes import node_parameters
from actors.catalogue import workflow
from actors.context import TaskContext
from actors.running import call_timeout
from actors.tools.sources import Observation, is_change, observe_sql, observe_url, source_key
from models.base import utcnow
from models.events import get_monitor_state, purge_deliveries, purge_events, purge_slots, save_monitor_state
from models.queue_samples import purge_samples
from models.results import purge_expired_results
from models.retention import purge_finished_tasks
from models.workers import purge_workers

__all__ = ["monitor_data_sources", "cleanup_old_events", "health_check"]

logger = logging.getLogger(__name__)

#: Where another module may offer ``purge_expired_cache(session) -> int`` (the tools' cache).
CACHE_MODULES = ("actors.tools.cache", "models.tool_cache")


@workflow("monitor_data_sources", submittable=False, max_retries=2, time_limit=900)
def monitor_data_sources(ctx: TaskContext) -> dict[str, Any]:
    """Checks the configured URLs and SQL query; a change publishes ``new_data_arrived``."""
    settings = ctx.settings
    urls = list(settings.monitor_urls)
    outcomes: dict[str, str] = {}
    with requests.Session() as http:
        for number, url in enumerate(urls):
            ctx.progress(int(90 * number / max(1, len(urls))), "checking_urls")
            outcomes[url] = _check(
                ctx,
                url,
                key=source_key(url),
                observe=partial(observe_url, http, url, timeout=call_timeout(settings.monitor_timeout)),
            )
    if settings.monitor_sql and not settings.monitor_database_url:
        outcomes["sql"] = "error: INTERLOCK_MONITOR_SQL is set but INTERLOCK_MONITOR_DATABASE_URL is empty"
    elif settings.monitor_sql:
        ctx.progress(90, "checking_sql")
        outcomes["sql"] = _check(
            ctx,
            "sql",
            key=source_key(f"{settings.monitor_database_url}\n{settings.monitor_sql}"),
            observe=lambda previous: observe_sql(
                settings.monitor_database_url, settings.monitor_sql, timeout=call_timeout(settings.monitor_timeout)
            ),
            extra={"query": settings.monitor_sql},
        )
    return {
        "checked": len(outcomes),
        "changed": sorted(source for source, outcome in outcomes.items() if outcome == "changed"),
        "outcomes": outcomes,
    }


def _check(
    ctx: TaskContext,
    source: str,
    *,
    key: str,
    observe: Callable[..., Observation],
    extra: dict[str, Any] | None = None,
) -> str:
    """Observe one source (no transaction held meanwhile), publish a change, remember what was seen."""
    with ctx.runtime.sessions() as session:
        state = get_monitor_state(session, key)
        previous = Observation(state.etag, state.last_modified, state.sha256) if state and state.sha256 else None
    try:
        seen = observe(previous=previous)
    except (requests.RequestException, SQLAlchemyError, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}"[:1000]
        logger.warning("monitoring %s failed: %s", source, error)
        with ctx.runtime.sessions.begin() as session:
            save_monitor_state(
                session, key=key, source=source, etag=None, last_modified=None, sha256=None, changed=False, error=error
            )
        return f"error: {error}"
    changed = is_change(previous, seen)
    if changed:
        # Published before the new state is stored: a crash in between reports the change twice
        # rather than never. The event id is derived from (task, source), so a retry re-sends it.
        data = {
            "source": source,
            "content": "new data detected",
            "etag": seen.etag,
            "last_modified": seen.last_modified,
            "sha256": seen.sha256,
            "detected_at": utcnow().isoformat(),
            **(extra or {}),
        }
        ctx.publish("new_data_arrived", data, source="monitor", key=key)
    with ctx.runtime.sessions.begin() as session:
        save_monitor_state(
            session,
            key=key,
            source=source,
            etag=seen.etag,
            last_modified=seen.last_modified,
            sha256=seen.sha256,
            changed=changed,
        )
    if previous is None:
        return "baseline"
    return "changed" if changed else "unchanged"


@workflow("cleanup_old_events", submittable=False, max_retries=2, time_limit=1800)
def cleanup_old_events(ctx: TaskContext) -> dict[str, Any]:
    """Applies retention: old events, finished tasks with their history, expired results and cache."""
    settings = ctx.settings
    now = utcnow()
    event_cutoff = now - timedelta(seconds=settings.event_retention)
    task_cutoff = now - timedelta(seconds=settings.task_retention)
    purges: dict[str, Callable[[Session], int]] = {
        "events": lambda s: purge_events(s, created_before=event_cutoff),
        "tasks": lambda s: purge_finished_tasks(s, finished_before=task_cutoff),
        "webhook_deliveries": lambda s: purge_deliveries(s, received_before=event_cutoff),
        "schedule_slots": lambda s: purge_slots(s, claimed_before=event_cutoff),
        "actor_results": purge_expired_results,
        "queue_samples": lambda s: purge_samples(s, before=event_cutoff),
        "workers": lambda s: purge_workers(s, seen_before=event_cutoff),
    }
    purge_cache = _cache_purger()
    if purge_cache is not None:
        purges["tool_cache"] = purge_cache
    deleted: dict[str, int] = {}
    for number, (name, purge) in enumerate(purges.items()):
        ctx.progress(int(100 * number / len(purges)), f"purging_{name}")
        deleted[name] = 0
        while True:  # batches, each its own short transaction
            with ctx.runtime.sessions.begin() as session:
                count = purge(session)
            deleted[name] += count
            if count == 0 or name not in ("events", "tasks"):
                break
    logger.info("retention cleanup deleted %s", deleted)
    return {"deleted": deleted, "event_cutoff": event_cutoff.isoformat(), "task_cutoff": task_cutoff.isoformat()}


def _cache_purger() -> Callable[[Session], int] | None:
    """``purge_expired_cache`` of the tools' cache if that module offers one (imported lazily)."""
    for module_name in CACHE_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        purge = getattr(module, "purge_expired_cache", None)
        if callable(purge):
            return cast("Callable[[Session], int]", purge)
    return None


@workflow("health_check", submittable=False, max_retries=0, time_limit=120)
def health_check(ctx: TaskContext) -> dict[str, Any]:
    """Checks the database and the broker and records the outcome as the event ``system.health``."""
    checks = {"database": _timed(lambda: _check_database(ctx)), "broker": _timed(lambda: _check_broker(ctx.broker))}
    queues: dict[str, list[int]] = {}
    if isinstance(ctx.broker, RabbitmqBroker) and checks["broker"]["status"] == "ok":
        for queue in sorted(ctx.broker.get_declared_queues()):
            try:
                queues[queue] = list(ctx.broker.get_queue_message_counts(queue))
            except Exception as exc:  # noqa: BLE001 - a probe reports what it cannot read
                logger.warning("could not count the messages of %s: %s", queue, exc)
    outcome = {
        "status": "healthy" if all(c["status"] == "ok" for c in checks.values()) else "degraded",
        "checks": checks,
        "queues": queues,  # queue -> [ready, delayed, dead-lettered]
        "worker": ctx.runtime.owner,
        "checked_at": utcnow().isoformat(),
    }
    ctx.publish("system.health", outcome, source="health_check")
    return outcome


def _check_database(ctx: TaskContext) -> None:
    with ctx.runtime.engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def _check_broker(broker: Any) -> None:
    """A fresh connection to RabbitMQ, as a new client would open (the in-process broker is in-process)."""
    if isinstance(broker, RabbitmqBroker):
        pika.BlockingConnection(node_parameters(broker)).close()


def _timed(check: Callable[[], None]) -> dict[str, Any]:
    started = time.monotonic()
    try:
        check()
    except Exception as exc:  # noqa: BLE001 - a probe reports failures, it does not raise them
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:500]}
    return {"status": "ok", "latency_ms": round((time.monotonic() - started) * 1000, 1)}
