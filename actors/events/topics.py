"""Event types and topic patterns, matched as RabbitMQ's topic exchange matches them.

An event type is dot-separated words (``new_data_arrived``, ``github.push``). A subscription's
pattern is words, ``*`` (exactly one word) or ``#`` (zero or more words), separated by dots.
"""

from __future__ import annotations

import re
from functools import lru_cache

from actors.errors import InvalidInput

__all__ = ["MAX_EVENT_TYPE", "check_event_type", "check_pattern", "topic_matches"]

_WORD = r"[A-Za-z0-9_-]+"
_EVENT_TYPE = re.compile(rf"{_WORD}(\.{_WORD})*")
_PATTERN = re.compile(rf"({_WORD}|\*|#)(\.({_WORD}|\*|#))*")
MAX_EVENT_TYPE = 128


def check_event_type(event_type: str) -> str:
    """Event types are dot-separated words (``new_data_arrived``, ``github.push``)."""
    if len(event_type) > MAX_EVENT_TYPE or not _EVENT_TYPE.fullmatch(event_type):
        raise InvalidInput(
            f"event type {event_type!r} must be dot-separated words of letters, digits, '_' or '-' "
            f"(at most {MAX_EVENT_TYPE} characters)"
        )
    return event_type


def check_pattern(pattern: str) -> str:
    """A topic pattern, or a ValueError (a subscription's patterns are the code's, not a user's)."""
    if not _PATTERN.fullmatch(pattern):
        raise ValueError(f"{pattern!r} is not a topic pattern (words, '*' or '#', separated by dots)")
    return pattern


def topic_matches(pattern: str, event_type: str) -> bool:
    """RabbitMQ's topic matching: ``*`` is exactly one word, ``#`` zero or more words."""
    return _match(tuple(pattern.split(".")), tuple(event_type.split(".")))


@lru_cache(maxsize=4096)
def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return _match(rest, words) or (bool(words) and _match(pattern, words[1:]))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])
