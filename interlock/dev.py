"""``interlock dev``: API, worker and scheduler in one process, on the embedded defaults."""

from __future__ import annotations

import logging
import signal
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .logs import configure_logging
from .migrations import upgrade
from .settings import Settings

__all__ = ["run_dev"]

logger = logging.getLogger(__name__)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)


def run_dev(settings: Settings, *, host: str, port: int, threads: int) -> int:
    configure_logging(settings.log_level, settings.log_format)
    upgrade(settings)  # development convenience; deployments run `interlock migrate` as a step

    from web.app import create_app

    from .scheduler import job_triggers, start_scheduler
    from .worker import start_worker

    job_triggers(settings)  # a bad schedule is refused before anything starts

    worker, broker, runtime = start_worker(settings, queues=None, threads=threads)
    from actors.catalogue import load_catalogue

    catalogue = load_catalogue(settings)
    app = create_app(runtime, broker, catalogue)  # type: ignore[arg-type]
    scheduler = start_scheduler(settings, runtime, broker, catalogue)  # type: ignore[arg-type]
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
    if settings.auth == "off":
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
    runtime.close()  # type: ignore[attr-defined]
    return 0
