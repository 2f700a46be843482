"""The one place the API reads the environment; gunicorn calls the factory ``web.wsgi:get_app()``."""

from __future__ import annotations

import atexit

import falcon

from actors.broker import build_broker
from actors.catalogue import load_catalogue
from actors.runtime import Runtime
from interlock import tracing
from interlock.logs import configure_logging
from interlock.settings import Settings

from .app import create_app

__all__ = ["get_app"]


def get_app() -> falcon.App[falcon.Request, falcon.Response]:
    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    tracing.configure(settings, service="interlock-api")
    runtime = Runtime.open(settings)
    catalogue = load_catalogue(settings)
    broker = build_broker(settings, runtime, catalogue)
    app = create_app(runtime, broker, catalogue)
    # The outbox relay ends with its batch in flight (if any) when gunicorn stops this worker; what
    # it leaves is published by the other processes' relays or the workers' maintenance.
    atexit.register(broker.close)
    return app
