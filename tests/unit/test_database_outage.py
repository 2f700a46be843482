"""While the database is away, a message that must wait is not lost: it waits in the broker."""

from __future__ import annotations

import logging

from actors.broker import build_broker
from actors.catalogue import load_catalogue
from actors.messages import task_message
from actors.runtime import Runtime
from interlock.settings import Settings


def test_a_delayed_message_waits_in_the_delay_queue_when_it_cannot_be_parked(caplog) -> None:
    settings = Settings.from_env({}, database_url="postgresql://nobody@127.0.0.1:1/unreachable", broker_url="")
    runtime = Runtime.open(settings)
    broker = build_broker(settings, runtime, load_catalogue(settings))
    try:
        with caplog.at_level(logging.WARNING):
            broker.enqueue(task_message(queue="default", actor="interlock.any", task_id="t-1"), delay=60_000)
        assert broker.queues["default.DQ"].qsize() == 1  # Dramatiq's own delay queue holds it
        assert "waits in the broker's delay queue" in caplog.text
    finally:
        broker.close()
        runtime.close()
