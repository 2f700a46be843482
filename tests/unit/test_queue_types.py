"""Queue arguments by INTERLOCK_QUEUE_TYPE, and priorities routed to bands in quorum mode.

The broker is built for real but never connects: its channel is a recorder of the declarations
Dramatiq would send, so the arguments checked are the ones RabbitMQ would receive.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL

from actors.broker import InterlockRabbitmqBroker, build_broker
from actors.catalogue import WorkflowSpec, spec_for_actor
from actors.messages import task_message
from actors.priority_bands import band_of, canonical_name, routed, with_bands
from actors.runtime import Runtime
from interlock.settings import Settings, SettingsError, setting_rows

URLS = "amqp://guest:guest@127.0.0.1:1/;amqp://guest:guest@127.0.0.1:2/;amqp://guest:guest@127.0.0.1:3/"


class RecordingChannel:
    """Stands in for a pika channel: keeps each queue's declared arguments."""

    def __init__(self) -> None:
        self.declared: dict[str, dict[str, Any]] = {}

    def queue_declare(self, queue: str, *, durable: bool = False, arguments: dict[str, Any] | None = None) -> None:
        assert durable, queue
        self.declared[queue] = dict(arguments or {})


def _noop(ctx: Any) -> None:
    return None


SPEC = WorkflowSpec(
    name="noop", fn=_noop, queue="work", description="", actor="run_noop", former_actor_names=("old_noop",)
)


@pytest.fixture
def built(request: pytest.FixtureRequest) -> Iterator[tuple[InterlockRabbitmqBroker, RecordingChannel]]:
    settings = Settings.from_env({}, broker_url=URLS, queue_type=request.param, max_deliveries=4)
    runtime = Runtime.open(settings)
    broker = build_broker(settings, runtime, {SPEC.name: SPEC})
    assert isinstance(broker, InterlockRabbitmqBroker)
    channel = RecordingChannel()
    broker.state.channel = channel
    for queue in sorted(broker.get_declared_queues()):
        broker._ensure_queue(queue)
    yield broker, channel
    runtime.close()


@pytest.mark.parametrize("built", ["classic"], indirect=True)
def test_classic_queues_are_declared_as_before(built: tuple[InterlockRabbitmqBroker, RecordingChannel]) -> None:
    _, channel = built
    assert set(channel.declared) == {"work", "work.DQ", "work.XQ"}
    for queue in ("work", "work.DQ"):
        assert channel.declared[queue] == {
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "work.XQ",
            "x-max-priority": 10,
        }
    assert channel.declared["work.XQ"] == {"x-message-ttl": DEAD_MESSAGE_TTL}


@pytest.mark.parametrize("built", ["quorum"], indirect=True)
def test_quorum_queues_have_a_delivery_limit_and_bands(built: tuple[InterlockRabbitmqBroker, RecordingChannel]) -> None:
    _, channel = built
    queues = with_bands(["work"])
    assert queues == ["work", "work.high", "work.low"]
    assert set(channel.declared) == {f"{q}{suffix}" for q in queues for suffix in ("", ".DQ", ".XQ")}
    for queue in queues:
        for name in (queue, f"{queue}.DQ"):
            assert channel.declared[name] == {
                "x-queue-type": "quorum",
                # twice INTERLOCK_MAX_DELIVERIES: the poison-message middleware decides first
                "x-delivery-limit": 8,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": f"{queue}.XQ",
            }
        # No delivery limit: listing dead letters returns them, which RabbitMQ 3.x counts.
        assert channel.declared[f"{queue}.XQ"] == {"x-queue-type": "quorum", "x-message-ttl": DEAD_MESSAGE_TTL}


@pytest.mark.parametrize("built", ["classic", "quorum"], indirect=True)
def test_twin_actors_run_the_high_band_first(built: tuple[InterlockRabbitmqBroker, RecordingChannel]) -> None:
    broker, _ = built
    names = set(broker.get_declared_actors())
    if broker.queue_type == "classic":
        assert names == {"run_noop", "old_noop"}
        return
    assert names == {f"{a}{b}" for a in ("run_noop", "old_noop") for b in ("", ".high", ".low")}
    high, normal, low = (broker.get_actor(f"run_noop{b}") for b in (".high", "", ".low"))
    assert (high.queue_name, normal.queue_name, low.queue_name) == ("work.high", "work", "work.low")
    assert high.priority < normal.priority < low.priority  # Dramatiq runs lower numbers first
    assert spec_for_actor({SPEC.name: SPEC}, "old_noop.high") is SPEC


@pytest.mark.parametrize("built", ["classic", "quorum"], indirect=True)
def test_every_node_is_tried(built: tuple[InterlockRabbitmqBroker, RecordingChannel]) -> None:
    broker, _ = built
    assert isinstance(broker.parameters, list)
    assert [p.port for p in broker.parameters] == [1, 2, 3]


@pytest.mark.parametrize(
    ("priority", "queue", "actor"),
    [
        (0, "work.low", "run_noop.low"),
        (3, "work.low", "run_noop.low"),
        (4, "work", "run_noop"),
        (8, "work", "run_noop"),
        (9, "work.high", "run_noop.high"),
        (10, "work.high", "run_noop.high"),
    ],
)
def test_a_message_goes_to_the_band_of_its_priority(priority: int, queue: str, actor: str) -> None:
    message = routed(task_message(queue="work", actor="run_noop", task_id="t1", priority=priority))
    assert (message.queue_name, message.actor_name, message.args) == (queue, actor, ("t1",))
    # Routing again (a retry, a replay) keeps it there; a new priority moves it.
    assert routed(message) == message
    moved = routed(message.copy(options={"broker_priority": 9}))
    assert (moved.queue_name, moved.actor_name) == ("work.high", "run_noop.high")


def test_band_names() -> None:
    assert (band_of(9), band_of(4), band_of(0)) == ("high", None, "low")
    assert canonical_name("interlock.agent.low") == "interlock.agent"
    assert canonical_name("interlock.agent") == "interlock.agent"


def test_queue_type_is_validated_and_urls_are_masked_per_node() -> None:
    with pytest.raises(SettingsError, match="INTERLOCK_QUEUE_TYPE"):
        Settings.from_env({"INTERLOCK_QUEUE_TYPE": "stream"})
    with pytest.raises(SettingsError, match="INTERLOCK_BROKER_URL"):
        Settings.from_env({"INTERLOCK_BROKER_URL": "amqp://a/;http://b/"})
    settings = Settings.from_env({"INTERLOCK_BROKER_URL": "amqp://u:secret@a/;amqp://u:secret@b/"})
    assert settings.broker_urls == ("amqp://u:secret@a/", "amqp://u:secret@b/")
    shown = dict((name, value) for name, value, _ in setting_rows(settings))["INTERLOCK_BROKER_URL"]
    assert shown == "amqp://u:***@a/;amqp://u:***@b/"
