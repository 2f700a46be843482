"""Rate-limit specifications as written in settings: ``scraper=10/m,tools=30/m``."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Limit", "LimitSyntaxError", "parse_limits"]

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


class LimitSyntaxError(ValueError):
    pass


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
