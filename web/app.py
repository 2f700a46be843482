"""The Falcon application: ``create_app`` wires resources to dependencies; the route table lives here."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import dramatiq
import falcon
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from actors.catalogue import WorkflowSpec
from actors.events.bus import EventBus
from actors.outbox_relay import relay_of
from actors.runtime import Runtime
from interlock import __version__

from .auth import Auth
from .cancellation import CancelResource
from .dashboard import DashboardPage, Overview, TaskEvents, TaskList
from .dashboard_charts import Charts, Workers
from .dashboard_task import TaskPage
from .dlq import DeadLetterResource, DeadLettersResource, ReplayQueueResource, ReplayResource
from .errors import BodyLimit, InputGuard, register_error_handlers, strict_json_handler
from .events import EventsResource
from .health import HealthResource, ReadyResource, rabbitmq_probe
from .keys import KeyResource, KeysResource
from .login import LoginResource, LogoutResource
from .metrics import ApiMetrics, MetricsResource
from .openapi import DocsResource, OpenApiResource
from .static_files import StaticFiles
from .stream import StreamResource
from .tasks import ExecuteResource, ResultResource, StatusResource
from .tools import ToolResource
from .webhooks import CustomWebhook, GitHubWebhook, SlackWebhook
from .workflows import HistoryResource, ResumeResource

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


def create_app(
    runtime: Runtime, broker: dramatiq.Broker, catalogue: Mapping[str, WorkflowSpec]
) -> falcon.App[falcon.Request, falcon.Response]:
    settings = runtime.settings
    app = falcon.App(middleware=[BodyLimit(settings.max_body_bytes)])
    relay = relay_of(broker)
    metrics = ApiMetrics(runtime.sessions, collectors=[relay.publish_delay] if relay is not None else [])
    app.add_middleware(metrics)
    if not settings.auth:
        logger.warning("AUTHENTICATION IS OFF (INTERLOCK_AUTH=off): anyone who can reach this API can use all of it")
    app.add_middleware(Auth(runtime.sessions, enabled=settings.auth, key_cache_seconds=settings.api_key_cache_seconds))
    app.add_middleware(InputGuard())
    app.req_options.strip_url_path_trailing_slash = True
    # JSON only: a form or multipart post to a JSON route is a 415, not a silently different body.
    # Routes that take other encodings (Slack's form posts) read and verify the raw body themselves.
    app.req_options.media_handlers.pop(falcon.MEDIA_URLENCODED, None)
    app.req_options.media_handlers.pop(falcon.MEDIA_MULTIPART, None)
    app.req_options.media_handlers[falcon.MEDIA_JSON] = strict_json_handler()
    register_error_handlers(app)

    sessions = runtime.sessions
    app.add_route("/agent/execute", ExecuteResource(sessions, broker, catalogue, settings.queue_max_priority))
    app.add_route("/agent/status/{task_id}", StatusResource(sessions))
    app.add_route("/agent/result/{task_id}", ResultResource(sessions))
    app.add_route("/agent/history/{workflow_id}", HistoryResource(sessions))
    app.add_route("/agent/resume/{workflow_id}", ResumeResource(sessions, broker, catalogue))
    app.add_route("/agent/cancel/{task_id}", CancelResource(sessions))
    app.add_route("/agent/stream/{task_id}", StreamResource(sessions))
    app.add_route("/dlq", DeadLettersResource(sessions, broker, catalogue))
    app.add_route("/metrics", MetricsResource(metrics.registry))
    app.add_route("/", DashboardPage())
    app.add_route("/static/{name}", StaticFiles())
    app.add_route("/dashboard/api/tasks", TaskList(sessions))
    app.add_route("/dashboard/api/tasks/{task_id}", TaskPage(settings, sessions, catalogue))
    app.add_route("/dashboard/api/tasks/{task_id}/events", TaskEvents(sessions))
    app.add_route("/dashboard/api/overview", Overview(settings, sessions, broker, catalogue))
    app.add_route("/dashboard/api/charts", Charts(settings, sessions))
    app.add_route("/dashboard/api/workers", Workers(settings, sessions))
    app.add_route("/dlq/replay", ReplayQueueResource(sessions, broker, catalogue))
    app.add_route("/dlq/{task_id}", DeadLetterResource(sessions, broker, catalogue))
    app.add_route("/dlq/{task_id}/replay", ReplayResource(sessions, broker, catalogue))
    app.add_route("/tools/{name}", ToolResource(sessions, broker, catalogue, settings.queue_max_priority))
    bus = EventBus.for_runtime(runtime, broker)
    limit = settings.max_body_bytes
    app.add_route("/events", EventsResource(bus))
    app.add_route("/webhook/github", GitHubWebhook(bus, secret=settings.github_webhook_secret, max_body_bytes=limit))
    app.add_route("/webhook/slack", SlackWebhook(bus, secret=settings.slack_signing_secret, max_body_bytes=limit))
    app.add_route("/webhook/custom", CustomWebhook(bus, secret=settings.webhook_secret, max_body_bytes=limit))
    app.add_route("/keys", KeysResource(sessions))
    app.add_route("/keys/{key_id}", KeyResource(sessions))
    app.add_route("/login", LoginResource(sessions))
    app.add_route("/logout", LogoutResource(sessions))
    app.add_route("/openapi.json", OpenApiResource(app, version=__version__))
    app.add_route("/docs", DocsResource())
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadyResource(runtime.engine, lambda: check_broker(broker)))
    if relay is not None:  # publishes this process's submissions; stopped by broker.close()
        relay.start()
    return app


def check_broker(broker: dramatiq.Broker) -> None:
    """Readiness of the broker: a short-timeout AMQP connection to RabbitMQ; the in-process one is always up."""
    if isinstance(broker, RabbitmqBroker):
        parameters = broker.parameters[0] if isinstance(broker.parameters, list) else broker.parameters
        rabbitmq_probe(parameters)
