"""The Falcon application: ``create_app`` wires resources to dependencies; the route table lives here."""

from __future__ import annotations

from collections.abc import Mapping

import dramatiq
import falcon
import pika
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from actors.registry import WorkflowSpec
from actors.runtime import Runtime

from .errors import BodyLimit, register_error_handlers
from .health import HealthResource, ReadyResource
from .tasks import ExecuteResource, ResultResource, StatusResource

__all__ = ["create_app"]


def create_app(
    runtime: Runtime, broker: dramatiq.Broker, catalogue: Mapping[str, WorkflowSpec]
) -> falcon.App:
    settings = runtime.settings
    app = falcon.App(middleware=[BodyLimit(settings.max_body_bytes)])
    app.req_options.strip_url_path_trailing_slash = True
    # JSON only: a form post to a JSON route is a 415, not a silently different body. Routes that
    # take other encodings (Slack's form posts) read and verify the raw body themselves.
    app.req_options.media_handlers.pop(falcon.MEDIA_URLENCODED, None)
    register_error_handlers(app)

    sessions = runtime.sessions
    app.add_route("/agent/execute", ExecuteResource(sessions, broker, catalogue, settings.queue_max_priority))
    app.add_route("/agent/status/{task_id}", StatusResource(sessions))
    app.add_route("/agent/result/{task_id}", ResultResource(sessions))
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadyResource(runtime.engine, lambda: check_broker(broker)))
    return app


def check_broker(broker: dramatiq.Broker) -> None:
    if isinstance(broker, RabbitmqBroker):
        parameters = broker.parameters[0] if isinstance(broker.parameters, list) else broker.parameters
        connection = pika.BlockingConnection(parameters)
        connection.close()
