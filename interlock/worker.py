"""``interlock worker``: a supervisor that keeps N Dramatiq worker processes alive.

Dramatiq's own CLI stops every process when one dies. Ours replaces a dead process (a task that
segfaults or is OOM-killed must not take the fleet down) and recycles a process after
``max_tasks_per_child`` tasks, for libraries that leak memory.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Sequence
from multiprocessing.process import BaseProcess

import dramatiq

from .logs import configure_logging
from .settings import Settings

__all__ = ["run_worker_process", "Supervisor", "start_worker"]

logger = logging.getLogger(__name__)

RESTART_BACKOFF_MAX = 10.0


def start_worker(
    settings: Settings, *, queues: Sequence[str] | None, threads: int
) -> tuple[dramatiq.Worker, dramatiq.Broker, object]:
    """Build runtime, broker and a started Dramatiq worker in this process."""
    from actors.broker import build_broker
    from actors.registry import load_catalogue
    from actors.runtime import Runtime

    runtime = Runtime.open(settings)
    catalogue = load_catalogue(settings)
    broker = build_broker(settings, runtime, catalogue)
    known = {spec.queue for spec in catalogue.values()}
    unknown = set(queues or ()) - known
    if unknown:
        raise SystemExit(f"unknown queue(s) {sorted(unknown)}; known queues: {sorted(known)}")
    worker = dramatiq.Worker(broker, queues=set(queues) if queues else None, worker_threads=threads)
    # Prefetch no more than we can run: a prefetched message waits unacknowledged, and priority
    # only reorders what is still in RabbitMQ.
    worker.queue_prefetch = threads
    worker.start()
    return worker, broker, runtime


def run_worker_process(settings: Settings, queues: Sequence[str] | None, threads: int) -> None:
    """Body of one worker process: serve until SIGTERM, or until it has done ``max_tasks_per_child``."""
    configure_logging(settings.log_level, settings.log_format)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    worker, broker, runtime = start_worker(settings, queues=queues, threads=threads)
    from actors.tracking import TaskTracking

    tracking = next(m for m in broker.middleware if isinstance(m, TaskTracking))
    logger.info("worker process serving %s with %d threads", sorted(queues) if queues else "all queues", threads)
    while not stop.wait(0.2):
        if tracking.exhausted.is_set():
            logger.info("recycling this worker process after %d tasks", tracking.processed)
            break
    worker.stop()
    broker.close()
    runtime.close()  # type: ignore[attr-defined]


class Supervisor:
    """Starts worker processes and replaces any that exit until told to stop."""

    def __init__(self, settings: Settings, *, queues: Sequence[str] | None, processes: int, threads: int) -> None:
        self.settings = settings
        self.queues = list(queues) if queues else None
        self.processes = processes
        self.threads = threads
        self.context = multiprocessing.get_context("spawn")
        self.children: list[BaseProcess] = []
        self.stopping = threading.Event()

    def _spawn(self) -> BaseProcess:
        process = self.context.Process(
            target=run_worker_process,
            args=(self.settings, self.queues, self.threads),
            name="interlock-worker",
        )
        process.start()
        logger.info("started worker process %s", process.pid)
        return process

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        metrics = None
        if self.settings.worker_metrics_port:
            from actors.metrics import start_metrics_server  # before the children: they inherit its directory

            metrics = start_metrics_server(
                host=self.settings.worker_metrics_host,
                port=self.settings.worker_metrics_port,
                settings=self.settings,
            )
        self.children = [self._spawn() for _ in range(self.processes)]
        failures = 0
        while not self.stopping.wait(0.5):
            for index, child in enumerate(self.children):
                if child.is_alive():
                    continue
                code = child.exitcode
                if code == 0:
                    logger.info("worker process %s exited (recycled); starting a new one", child.pid)
                else:
                    failures += 1
                    logger.error("worker process %s died with exit code %s; replacing it", child.pid, code)
                    time.sleep(min(RESTART_BACKOFF_MAX, 0.1 * failures))
                self.children[index] = self._spawn()
        for child in self.children:
            if child.is_alive() and child.pid:
                child.terminate()
        deadline = time.monotonic() + 30
        for child in self.children:
            child.join(timeout=max(0.1, deadline - time.monotonic()))
            if child.is_alive():
                child.kill()
        if metrics is not None:
            metrics.close()
        return 0
