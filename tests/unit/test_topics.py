"""Subscriptions' topic patterns match event types as RabbitMQ's topic exchanges match routing keys."""

from __future__ import annotations

from actors.events.topics import topic_matches


def test_topic_patterns_match_like_rabbitmq() -> None:
    assert topic_matches("user.*", "user.updated")
    assert not topic_matches("user.*", "user")
    assert not topic_matches("user.*", "user.profile.changed")
    assert topic_matches("user.#", "user")
    assert topic_matches("user.#", "user.profile.changed")
    assert topic_matches("#", "anything.at.all")
    assert topic_matches("*.push", "github.push")
    assert not topic_matches("new_data_arrived", "new_data_arrived.x")
