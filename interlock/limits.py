"""Rate-limit specifications as written in settings: ``scraper=10/m,tools=30/m``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import SettingsError

__all__ = ["Limit", "LimitSyntaxError", "parse_limits", "format_limits"]

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


class LimitSyntaxError(SettingsError):
    """A rate limit that does not read as ``name=count/unit`` (or ``model=count``)."""


@dataclass(frozen=True)
class Limit:
    count: int
    period: float  # seconds


def parse_limits(spec: str, *, units: bool = True) -> dict[str, Limit]:
    """``"scraper=10/m,tools=30/m"`` → {name: Limit}. With ``units=False``: ``"gpt-4o=500"`` per minute."""
    limits: dict[str, Limit] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        pattern = r"([\w.*:-]+)=(\d+)/([smh])" if units else r"([\w.*:/-]+)=(\d+)"
        match = re.fullmatch(pattern, item)
        if match is None:
            example = "name=count/unit with unit s, m or h (e.g. scraper=10/m)" if units else "model=count"
            raise LimitSyntaxError(f"cannot read rate limit {item!r}: expected {example}")
        count = int(match.group(2))
        if count < 1:
            raise LimitSyntaxError(f"rate limit {item!r} must allow at least 1")
        limits[match.group(1)] = Limit(count, UNITS[match.group(3)] if units else 60.0)
    return limits


def format_limits(limits: Mapping[str, Limit], *, units: bool = True) -> str:
    """The inverse of :func:`parse_limits`: ``{name: Limit}`` written as the setting is."""
    items = []
    for name, limit in limits.items():
        if not units:
            if limit.period != 60.0:
                raise ValueError(f"the limit of {name!r} is not per minute: {limit}")
            items.append(f"{name}={limit.count}")
            continue
        unit = next((unit for unit, seconds in UNITS.items() if seconds == limit.period), None)
        if unit is None:
            raise ValueError(f"the limit of {name!r} has no unit (s, m or h): {limit}")
        items.append(f"{name}={limit.count}/{unit}")
    return ",".join(items)
