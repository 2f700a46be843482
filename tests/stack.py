"""An Interlock in this process on the real services: the API (a Falcon test client) and a worker.

Tests get one from the ``make_stack`` fixture (``tests/conftest.py``), which stops every stack it
started when the test ends, passed or failed; ``stack`` is the usual one on the ``settings`` fixture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import falcon.testing

from actors.broker import build_broker
from actors.catalogue import load_catalogue
from actors.runtime import Runtime
from interlock.cli.worker import start_worker
from interlock.settings import Settings
from web.app import create_app

__all__ = ["MakeStack", "Stack", "start_stack", "stop_stack"]


@dataclass
class Stack:
    """An API (Falcon test client) and an in-process worker on the same real services."""

    settings: Settings
    runtime: Runtime
    broker: Any
    client: falcon.testing.TestClient
    worker: Any  # None without a worker, and so are the two below
    worker_broker: Any
    worker_runtime: Any

    def submit(self, **body: Any) -> str:
        response = self.client.simulate_post("/agent/execute", json=body)
        assert response.status_code == 202, response.text
        return str(response.json["task_id"])


class MakeStack(Protocol):
    """The ``make_stack`` fixture: ``make_stack(settings, worker=False)`` starts a stack for the test."""

    def __call__(self, settings: Settings, *, worker: bool = True) -> Stack: ...


def start_stack(settings: Settings, *, worker: bool = True) -> Stack:
    """API and worker in this process; with the in-process broker they must share one broker."""
    catalogue = load_catalogue(settings)
    worker_obj = worker_broker = worker_runtime = None
    if worker:
        worker_obj, worker_broker, worker_runtime = start_worker(settings, queues=None, threads=settings.worker_threads)
    runtime = Runtime.open(settings)
    if worker_broker is not None and not settings.uses_rabbitmq:
        broker = worker_broker
    else:
        broker = build_broker(settings, runtime, catalogue)
    client = falcon.testing.TestClient(create_app(runtime, broker, catalogue))
    return Stack(settings, runtime, broker, client, worker_obj, worker_broker, worker_runtime)


def stop_stack(stack: Stack) -> None:
    """Stop the worker (it finishes the messages it holds), then close the API's broker and database."""
    if stack.worker is not None:
        stack.worker.stop()
        stack.worker_broker.close()
        stack.worker_runtime.close()
    if stack.broker is not stack.worker_broker:
        stack.broker.close()
    stack.runtime.close()
