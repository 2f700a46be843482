"""``interlock dev``: API, worker and scheduler in one process, on the embedded defaults."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from actors.catalogue import load_catalogue
from interlock import tracing
from interlock.logs import configure_logging
from interlock.settings import Settings
from models.migrations import upgrade
from web.app import create_app

from .scheduler import job_triggers, start_scheduler
from .worker import start_worker

__all__ = ["run", "run_dev"]

logger = logging.getLogger(__name__)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)


def run(settings: Settings, args: argparse.Namespace) -> int:
    """``interlock dev``: authentication is off unless INTERLOCK_AUTH is set explicitly."""
    if "INTERLOCK_AUTH" not in os.environ:  # development default; an explicit INTERLOCK_AUTH is honoured
        settings = settings.replace(auth=False)
    return run_dev(settings, host=args.host, port=args.port, threads=args.threads or settings.worker_threads)


def run_dev(settings: Settings, *, host: str, port: int, threads: int) -> int:
    configure_logging(settings.log_level, settings.log_format)
    tracing.configure(settings, service="interlock-dev")
    upgrade(settings)  # development convenience; deployments run `interlock migrate` as a step
    job_triggers(settings)  # a bad schedule is refused before anything starts

    worker, broker, runtime = start_worker(settings, queues=None, threads=threads)
    catalogue = load_catalogue(settings)
    app = create_app(runtime, broker, catalogue)
    scheduler = start_scheduler(settings, runtime, broker, catalogue)
    server = make_server(host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    stop = threading.Event()

    def shutdown(*_: object) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    broker_name = "RabbitMQ" if settings.uses_rabbitmq else "in-process broker"
    database = settings.effective_database_url.split("@")[-1]
    llm = "offline stand-in model" if settings.llm_offline else settings.model
    if not settings.auth:
        banner = "!" * 78
        print(
            f"{banner}\n!! AUTHENTICATION IS OFF: `interlock dev` accepts every request without an API key.\n"
            f"!! Never expose it; run `interlock api` (INTERLOCK_AUTH=on) for anything shared.\n{banner}",
            flush=True,
        )
    else:
        print(
            "Authentication is on (INTERLOCK_AUTH=on): send `Authorization: Bearer <key>`; "
            "make a key with `interlock keys create --tenant <name>`.",
            flush=True,
        )
    print(
        f"Interlock dev running at http://{host}:{server.server_port}  "
        f"(broker: {broker_name}; database: {database}; LLM: {llm})",
        flush=True,
    )
    server.serve_forever()
    scheduler.shutdown(wait=False)
    worker.stop()
    broker.close()
    runtime.close()
    tracing.shutdown()
    return 0
