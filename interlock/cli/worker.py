"""``interlock worker``: a supervisor that keeps N Dramatiq worker processes alive.

Dramatiq's own CLI stops every process when one dies. Ours replaces a dead process (a task that
segfaults or is OOM-killed must not take the fleet down) and recycles a process after
``max_tasks_per_child`` tasks, for libraries that leak memory.

The supervisor names each process's lease owner (a random token it hands the process). When a
process has exited, and so certainly runs nothing any more, the supervisor makes the leases of
that owner lapse at once: its tasks are picked up again at the next maintenance pass of any
worker instead of when their leases would have run out.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING

from interlock.logs import configure_logging
from interlock.settings import Settings

if TYPE_CHECKING:
    import dramatiq
    from sqlalchemy import Engine

    from actors.runtime import Runtime

# The supervisor imports only what it needs to start processes: the worker's stack (Dramatiq, the
# OpenAI client, SQLAlchemy, about 80 MB of RSS) is imported inside the functions a worker process
# runs, and SQLAlchemy by the supervisor only when a child died and its leases are released.

__all__ = ["run", "run_worker_process", "Supervisor", "start_worker", "worker_owner"]

logger = logging.getLogger(__name__)

RESTART_BACKOFF_MAX = 10.0
#: Bounds on the supervisor's one statement after a death: a database that does not answer must
#: not hold up the replacement of processes (the leases then lapse on their own).
RELEASE_CONNECT_TIMEOUT = 5
RELEASE_STATEMENT_TIMEOUT_MS = 10_000


def worker_owner(pid: int, token: str) -> str:
    """The lease owner name of worker process ``pid`` on this host (the format of ``Runtime.owner``)."""
    return f"{socket.gethostname()}:{pid}:{token}"


def start_worker(
    settings: Settings,
    *,
    queues: Sequence[str] | None,
    threads: int,
    owner_token: str | None = None,
    slots: int | None = None,
) -> tuple[dramatiq.Worker, dramatiq.Broker, Runtime]:
    """Build runtime, broker and a started Dramatiq worker in this process.

    With ``owner_token`` (given by the supervisor) this process's leases are held under
    ``worker_owner(pid, owner_token)``, a name the supervisor knows. With ``slots`` above
    ``threads`` it holds ``slots`` tasks at once, ``threads`` of them running (``StartGate``).
    """
    import dramatiq

    from actors.broker import build_broker
    from actors.catalogue import load_catalogue
    from actors.priority_bands import routes_bands, with_bands
    from actors.running import StartGate
    from actors.runtime import Runtime

    runtime = Runtime.open(settings)
    if slots is not None and slots > threads:
        runtime.start_gate = StartGate(threads)
        threads = slots
    if owner_token is not None:
        runtime.owner = worker_owner(os.getpid(), owner_token)
    catalogue = load_catalogue(settings)
    broker = build_broker(settings, runtime, catalogue)
    known = {spec.queue for spec in catalogue.values()}
    unknown = set(queues or ()) - known
    if unknown:
        raise SystemExit(f"unknown queue(s) {sorted(unknown)}; known queues: {sorted(known)}")
    # Dramatiq's own CLI says this; without it TimeLimit's watcher thread never starts.
    broker.emit_after("process_boot")
    if queues and routes_bands(broker):
        queues = with_bands(queues)  # quorum mode: each queue's priority bands too
    worker = dramatiq.Worker(broker, queues=set(queues) if queues else None, worker_threads=threads)
    # Prefetch no more than we can run: a prefetched message waits unacknowledged, and priority
    # only reorders what is still in RabbitMQ.
    worker.queue_prefetch = threads
    worker.start()
    return worker, broker, runtime


def run_worker_process(
    settings: Settings,
    queues: Sequence[str] | None,
    threads: int,
    owner_token: str | None = None,
    slots: int | None = None,
) -> None:
    """Body of one worker process: serve until SIGTERM, or until it has done ``max_tasks_per_child``."""
    from actors.middleware.recycling import Recycling
    from interlock import tracing

    configure_logging(settings.log_level, settings.log_format)
    tracing.configure(settings, service="interlock-worker")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    worker, broker, runtime = start_worker(
        settings, queues=queues, threads=threads, owner_token=owner_token, slots=slots
    )
    recycling = next(m for m in broker.middleware if isinstance(m, Recycling))
    logger.info(
        "worker process serving %s with %d threads, %s",
        sorted(queues) if queues else "all queues",
        max(threads, slots or 0),
        f"{threads} running at once" if slots and slots > threads else "all running at once",
    )
    while not stop.wait(0.2):
        if recycling.exhausted.is_set():
            logger.info("recycling this worker process after %d tasks", recycling.processed)
            break
    worker.stop()
    broker.close()
    runtime.close()
    tracing.shutdown()  # a spawned process skips atexit: send the spans still buffered


class Supervisor:
    """Starts worker processes and replaces any that exit until told to stop."""

    def __init__(
        self,
        settings: Settings,
        *,
        queues: Sequence[str] | None,
        processes: int,
        threads: int,
        slots: int | None = None,
    ) -> None:
        self.settings = settings
        self.slots = slots
        self.queues = list(queues) if queues else None
        self.processes = processes
        self.threads = threads
        self.context = multiprocessing.get_context("spawn")
        self.children: list[BaseProcess] = []
        self.stopping = threading.Event()
        #: The lease owner of each child, by pid, until its leases were released.
        self.owners: dict[int, str] = {}
        self._engine: Engine | None = None

    def _spawn(self) -> BaseProcess:
        token = uuid.uuid4().hex[:8]
        process = self.context.Process(
            target=run_worker_process,
            args=(self.settings, self.queues, self.threads, token, self.slots),
            name="interlock-worker",
        )
        process.start()
        assert process.pid is not None
        self.owners[process.pid] = worker_owner(process.pid, token)
        logger.info("started worker process %s", process.pid)
        return process

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        metrics = None
        if self.settings.worker_metrics_port:
            from actors.middleware.metrics import start_metrics_server

            # Before the children start: they inherit its directory.
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
                    backoff = 0.0
                else:
                    failures += 1
                    logger.error("worker process %s died with exit code %s; replacing it", child.pid, code)
                    backoff = min(RESTART_BACKOFF_MAX, 0.1 * failures)
                self.release_leases([child])
                time.sleep(backoff)
                self.children[index] = self._spawn()
        for child in self.children:
            if child.is_alive() and child.pid:
                child.terminate()
        deadline = time.monotonic() + 30
        for child in self.children:
            child.join(timeout=max(0.1, deadline - time.monotonic()))
            if child.is_alive():
                child.kill()
                child.join(timeout=10)
        self.release_leases([child for child in self.children if not child.is_alive()])
        if metrics is not None:
            metrics.close()
        if self._engine is not None:
            self._engine.dispose()
        return 0

    def release_leases(self, dead: Sequence[BaseProcess]) -> int:
        """Make the leases of exited children lapse now, so their tasks need not wait them out.

        Only processes that have exited (``is_alive()`` is false once the child is reaped) are
        passed in, and each owner name carries a token of its own, so no live process's lease is
        touched, even if the system hands a dead child's pid to a new process. A clean exit
        leaves no lease, unless its tasks outlived the shutdown. Database errors are logged: the
        leases then lapse on their own.
        """
        owners = {child.pid: self.owners.pop(child.pid) for child in dead if child.pid in self.owners}
        if not owners:
            return 0
        from sqlalchemy.exc import SQLAlchemyError
        from sqlalchemy.orm import Session

        from models.leases import expire_leases

        try:
            if self._engine is None:  # built on first use: the supervisor otherwise needs no database
                self._engine = _release_engine(self.settings.effective_database_url)
            with Session(self._engine) as session, session.begin():
                released = expire_leases(session, owners=list(owners.values()))
        except SQLAlchemyError:
            logger.warning(
                "could not release the task leases of exited worker process(es) %s; they lapse within %gs",
                sorted(owners),
                self.settings.lease_seconds,
                exc_info=True,
            )
            return 0
        if released:
            logger.warning(
                "released %d task lease(s) of exited worker process(es) %s; maintenance re-publishes them now",
                released,
                sorted(owners),
            )
        return released


def _release_engine(url: str) -> Engine:
    """An engine without a pool (deaths are rare) whose connect and statements give up quickly."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from models.database import make_engine

    if url.startswith("sqlite"):
        return make_engine(url)
    timeout = RELEASE_STATEMENT_TIMEOUT_MS
    return create_engine(
        url,
        poolclass=NullPool,
        connect_args={
            "connect_timeout": RELEASE_CONNECT_TIMEOUT,
            "options": f"-c lock_timeout={timeout} -c statement_timeout={timeout}",
        },
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    """``interlock worker``: supervise the worker processes until SIGTERM or SIGINT."""
    configure_logging(settings.log_level, settings.log_format)
    threads = args.threads
    if threads is None and args.queues:
        # Serving named queues: as many threads as their configured concurrency adds up to.
        threads = sum(settings.agent_concurrency.get(queue, settings.worker_threads) for queue in args.queues)
    supervisor = Supervisor(
        settings,
        queues=args.queues,
        processes=args.processes or settings.worker_processes,
        threads=threads or settings.worker_threads,
        # Serving everything with the default threads: hold INTERLOCK_AGENT_SLOTS tasks per process.
        # Explicit --threads or per-queue concurrency keep meaning tasks at once, all of them.
        slots=settings.agent_slots if threads is None else None,
    )
    return supervisor.run()
