"""Worker metrics for Prometheus: tasks by actor and outcome, durations, retries, waits, tokens.

``interlock worker`` runs several processes, so the metrics use prometheus_client's multiprocess
mode: the supervisor creates a ``PROMETHEUS_MULTIPROC_DIR`` before it starts its children (each
child writes its samples there) and serves the sum of all of them on
``INTERLOCK_WORKER_METRICS_PORT``. A process that is replaced keeps its counts in the sum.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dramatiq
import pika
import pika.exceptions
from dramatiq.middleware import Middleware
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy.exc import SQLAlchemyError

from actors.broker_nodes import parameters_for_urls
from actors.catalogue import load_catalogue, spec_for_actor
from actors.errors import TaskCancelled
from actors.middleware.current_run import current_run
from actors.orchestration import is_suspended
from actors.queues import rabbitmq_queue_depths
from actors.runtime import Runtime
from actors.tools.circuit_breaker import breaker_states
from interlock.settings import Settings
from models.group_commit import observe_batches

__all__ = [
    "WorkerMetrics",
    "MetricsServer",
    "start_metrics_server",
    "TASKS",
    "TASK_DURATION",
    "RETRIES",
    "RATE_LIMIT_WAITS",
    "LLM_TOKENS",
    "LLM_COST",
    "WRITE_BATCH_SIZE",
    "ClusterCollector",
]

logger = logging.getLogger(__name__)

# Not registered with the default registry: in multiprocess mode the samples go to files that
# the supervisor's MultiProcessCollector reads; in one process (tests, `interlock dev`) they stay
# out of the API's /metrics.
TASKS = Counter("interlock_worker_tasks", "Task runs ended, by actor and outcome.", ["actor", "outcome"], registry=None)
TASK_DURATION = Histogram(
    "interlock_worker_task_duration_seconds",
    "Seconds one task run took, by actor and outcome.",
    ["actor", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
    registry=None,
)
RETRIES = Counter("interlock_worker_retries", "Task runs that will be retried, by actor.", ["actor"], registry=None)
RATE_LIMIT_WAITS = Counter(
    "interlock_worker_rate_limit_waits",
    "Messages parked because their agent type's start limit was reached, by queue.",
    ["queue"],
    registry=None,
)
LLM_COST = Counter(
    "interlock_worker_llm_cost_usd",
    "Estimated LLM spend in US dollars by model, from token usage and INTERLOCK_LLM_PRICES.",
    ["model"],
    registry=None,
)
LLM_TOKENS = Counter(
    "interlock_worker_llm_tokens",
    "LLM tokens used by finished task runs, by model and kind (prompt, completion, total).",
    ["model", "kind"],
    registry=None,
)
WRITE_BATCH_SIZE = Histogram(
    "interlock_worker_write_batch_size",
    "Task writes made by one statement of a process's group commit, by kind (claim, progress, finish).",
    ["kind"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    registry=None,
)


#: Labelled children, looked up once: ``labels()`` validates and locks on every call, and these are
#: counted on every task (or batch).
_batch_sizes: dict[str, Any] = {}
_ended: dict[tuple[str, str], tuple[Any, Any]] = {}


def _observe_write_batch(kind: str, size: int) -> None:
    child = _batch_sizes.get(kind)
    if child is None:
        child = _batch_sizes.setdefault(kind, WRITE_BATCH_SIZE.labels(kind))
    child.observe(size)


def _count_ended(actor: str, outcome: str, seconds: float) -> None:
    children = _ended.get((actor, outcome))
    if children is None:
        children = _ended.setdefault(
            (actor, outcome), (TASKS.labels(actor, outcome), TASK_DURATION.labels(actor, outcome))
        )
    children[0].inc()
    children[1].observe(seconds)


class WorkerMetrics(Middleware):
    """Counts each task run once its outcome is known (after Retries decided)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.prices = runtime.settings.llm_prices
        observe_batches(_observe_write_batch)  # once per batch, from the writer's thread

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        run = current_run()
        if run is None:
            return
        spec = spec_for_actor(self.runtime.catalogue, message.actor_name)
        actor = spec.actor_name if spec else message.actor_name  # a former name counts as the current one
        if exception is None:
            outcome = "suspended" if is_suspended(run.outcome) else "success"
        elif isinstance(exception, TaskCancelled):
            outcome = "cancelled"
        elif message.failed:
            outcome = "failure"
        else:
            outcome = "retry"
            RETRIES.labels(actor).inc()
        _count_ended(actor, outcome, time.monotonic() - run.started)
        model = "offline" if self.runtime.settings.llm_offline else self.runtime.settings.model
        usage = run.usage or {}
        for kind, tokens in usage.items():
            if kind.endswith("_tokens") and isinstance(tokens, int) and tokens > 0:
                LLM_TOKENS.labels(model, kind.removesuffix("_tokens")).inc(tokens)
        price = self.prices.get(model) or self.prices.get("*")
        if price is not None and usage:
            cost = (usage.get("prompt_tokens", 0) * price[0] + usage.get("completion_tokens", 0) * price[1]) / 1e6
            if cost > 0:
                LLM_COST.labels(model).inc(cost)


class ClusterCollector:
    """Read at scrape time: queue depths (work and dead-letter) and circuit-breaker states.

    These describe the cluster, not one process, so the supervisor reports them from the broker
    and the database instead of summing per-process counters.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._runtime: Runtime | None = None

    def _queues(self) -> list[str]:
        return sorted({spec.queue for spec in load_catalogue(self.settings).values()})

    def collect(self) -> Iterator[Any]:
        depth = GaugeMetricFamily(
            "interlock_queue_messages",
            "Messages waiting in RabbitMQ, by queue and kind (ready, dead).",
            labels=["queue", "kind"],
        )
        if self.settings.uses_rabbitmq:
            try:
                for row in rabbitmq_queue_depths(
                    parameters_for_urls(self.settings.broker_urls),
                    self._queues(),
                    bands=self.settings.queue_type == "quorum",
                ):
                    depth.add_metric([row["queue"], "ready"], row["ready"])
                    depth.add_metric([row["queue"], "dead"], row["dead_letters"])
            except (pika.exceptions.AMQPError, OSError) as exc:
                logger.warning("queue depths not collected: %s", exc)
        yield depth
        breakers = GaugeMetricFamily(
            "interlock_circuit_breaker_state",
            "Circuit breaker per target: 0 closed, 1 half-open, 2 open.",
            labels=["target"],
        )
        failures = GaugeMetricFamily(
            "interlock_circuit_breaker_failures", "Consecutive failures counted by each breaker.", labels=["target"]
        )
        try:
            if self._runtime is None:
                self._runtime = Runtime.open(self.settings)
            for breaker in breaker_states(self._runtime.sessions):
                breakers.add_metric([breaker["target"]], BREAKER_LEVELS.get(breaker["state"], 0))
                failures.add_metric([breaker["target"]], breaker["failures"])
        except SQLAlchemyError as exc:
            logger.warning("breaker states not collected: %s", exc)
        yield breakers
        yield failures


BREAKER_LEVELS = {"closed": 0, "half_open": 1, "open": 2}


@dataclass
class MetricsServer:
    """The supervisor's /metrics endpoint and the directory its worker processes write to."""

    directory: str
    server: Any
    owns_directory: bool

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)


def start_metrics_server(*, host: str, port: int, settings: Settings | None = None) -> MetricsServer | None:
    """Call in the supervisor before it starts worker processes; they inherit the directory.

    ``PROMETHEUS_MULTIPROC_DIR`` is how prometheus_client itself is told about multiprocess
    mode, so it is set in this process's environment for the children to inherit.
    """
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    owns = directory is None
    if directory is None:
        directory = tempfile.mkdtemp(prefix="interlock-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    if settings is not None:
        registry.register(ClusterCollector(settings))
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        logger.error("worker metrics not served: cannot listen on %s:%d (%s)", host, port, exc)
        return None
    logger.info("worker metrics at http://%s:%d/metrics", host, server.server_port)
    return MetricsServer(directory, server, owns)
