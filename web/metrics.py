"""``GET /metrics`` of the API: requests, latency, submissions, task counts and queue ages from the database.

Request metrics come from a Falcon middleware; task counts by workflow and state are read from
PostgreSQL at scrape time, so they are the same on every API replica and survive restarts.
Each app has its own registry (several apps may live in one test process). Task counts cover
every tenant, so ``/metrics`` answers operators only (``web.auth.OPERATOR_ROUTES``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import falcon
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from models.base import as_utc, utcnow
from models.scheduled import pending_summary
from models.task_queries import oldest_pending, task_counts

__all__ = ["ApiMetrics", "MetricsResource", "TaskStateCollector"]


class TaskStateCollector(Collector):
    """``interlock_tasks{workflow, state}``: how many task rows are in each state right now; and
    ``interlock_queue_oldest_pending_seconds{queue}``: how long the oldest task not yet started has waited.

    The queue's age is what its depth does not tell: ten waiting tasks are fine, one waiting for ten
    minutes is not (no worker serves the queue, a tenant's cap, a rate limit). A queue with nothing
    pending has no sample.
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "interlock_tasks", "Tasks in the database by workflow and state.", labels=["workflow", "state"]
        )
        age = GaugeMetricFamily(
            "interlock_queue_oldest_pending_seconds",
            "Seconds the oldest PENDING task of each queue has waited since it was queued.",
            labels=["queue"],
        )
        with self.sessions() as session:
            for workflow, state, count in task_counts(session):
                family.add_metric([workflow, state], count)
            now = utcnow()
            for queue, queued in oldest_pending(session):
                age.add_metric([queue], max(0.0, (now - (as_utc(queued) or now)).total_seconds()))
            pending, _ = pending_summary(session)
        outbox = GaugeMetricFamily(
            "interlock_outbox_pending", "Messages in the outbox that are due and not yet published to the broker."
        )
        outbox.add_metric([], pending)
        yield family
        yield age
        yield outbox

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # not collected at registration (no database call then)


#: Methods counted under their own name; any other (gunicorn accepts made-up ones) is ``other``.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
#: The route label of a request that matched no route (never the raw path: every label is bounded).
UNMATCHED = "unmatched"


class ApiMetrics:
    """Falcon middleware counting requests by route template, method and status, with latency.

    Every label takes a bounded set of values, whatever clients send: the route is the matched
    template, the method one of :data:`KNOWN_METHODS` or ``other``.
    """

    def __init__(self, sessions: sessionmaker[Session], *, collectors: Sequence[Collector] = ()) -> None:
        self.registry = CollectorRegistry()
        for collector in collectors:  # the process's own (the outbox relay's publish delays)
            self.registry.register(collector)
        self.requests = Counter(
            "interlock_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "interlock_http_request_duration_seconds",
            "Seconds until the response (for streams: until it started), by route and method.",
            ["route", "method"],
            registry=self.registry,
        )
        self.submissions = Counter(
            "interlock_submissions", "Tasks accepted over HTTP, by workflow.", ["workflow"], registry=self.registry
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.registry.register(TaskStateCollector(sessions))

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.metrics_started = time.perf_counter()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool) -> None:
        started = getattr(req.context, "metrics_started", None)
        route = req.uri_template or UNMATCHED
        method = req.method if req.method in KNOWN_METHODS else "other"
        count, latency = self._children_for(route, method, resp.status_code)
        count.inc()
        if started is not None:
            latency.observe(time.perf_counter() - started)
        workflow = getattr(req.context, "submitted_workflow", None)
        if workflow and resp.status_code < 300:
            self.submissions.labels(workflow).inc()

    def _children_for(self, route: str, method: str, status: int) -> tuple[Any, Any]:
        """The labelled counter and histogram of one (route, method, status), looked up once: ``labels()``
        validates and locks on every call, a measurable share of a submission's CPU. The labels are
        bounded (see the class), so is this dict; two threads racing on a new key get the same children."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(route, method, str(status)), self.latency.labels(route, method))
            self._children[key] = children
        return children


class MetricsResource:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = generate_latest(self.registry)
