"""How each kind of setting is written in the environment: read into a typed value, written back.

One :class:`Syntax` per kind of value: numbers, text, ``on``/``off``, comma-separated names,
``name=value`` pairs, rate limits, LLM prices. :meth:`Settings.from_env` reads every variable with
its field's syntax once; ``Settings.to_env``, ``interlock config`` and the docs' settings table write
the typed values back with the same syntax, so what they show is what the variable accepts.
A value that cannot be read is a :class:`SettingsError` naming the variable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import SettingsError
from .limits import Limit, format_limits, parse_limits

__all__ = [
    "Syntax",
    "TEXT",
    "INTEGER",
    "NUMBER",
    "ON_OFF",
    "NAMES",
    "PAIRS",
    "COUNTS",
    "RATE_LIMITS",
    "PER_MINUTE",
    "PRICES",
    "parse_pairs",
]


@dataclass(frozen=True)
class Syntax:
    """How one kind of setting is read from its variable's text and written back to it."""

    #: ``(text, variable) -> value``; raises :class:`SettingsError` naming the variable.
    read: Callable[[str, str], Any]
    #: ``value -> text`` that ``read`` turns into the same value.
    write: Callable[[Any], str]
    #: A set-but-empty variable means the default (numbers), not an empty value (text, lists, maps).
    empty_is_default: bool = False


def parse_pairs(text: str) -> dict[str, str]:
    """``"a=1,b=2"`` → {"a": "1", "b": "2"}."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"expected name=value, got {item!r}")
        pairs[name.strip()] = value.strip()
    return pairs


def _number(kind: type[int] | type[float]) -> Callable[[str, str], Any]:
    def read(text: str, variable: str) -> Any:
        try:
            return kind(text)
        except ValueError as exc:
            raise SettingsError(f"{variable}={text!r} is not a valid {kind.__name__}") from exc

    return read


def _write_number(value: float) -> str:
    """As a person writes it: whole seconds as ``3600``, not ``3600.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _read_on_off(text: str, variable: str) -> bool:
    if text not in {"on", "off"}:
        raise SettingsError(f"{variable} must be 'on' or 'off'")
    return text == "on"


def _read_names(text: str, variable: str) -> tuple[str, ...]:
    return tuple(name for name in (part.strip() for part in text.split(",")) if name)


def _read_pairs(text: str, variable: str) -> dict[str, str]:
    try:
        return parse_pairs(text)
    except ValueError as exc:
        raise SettingsError(f"{variable}: {exc}") from exc


def _read_counts(text: str, variable: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name, value in _read_pairs(text, variable).items():
        try:
            counts[name] = int(value)
        except ValueError as exc:
            raise SettingsError(f"{variable}: expected name=count, got {f'{name}={value}'!r}") from exc
    return counts


def _write_pairs(pairs: Mapping[str, object]) -> str:
    return ",".join(f"{name}={value}" for name, value in pairs.items())


def _read_prices(text: str, variable: str) -> dict[str, tuple[float, float]]:
    """``model=prompt/completion`` US dollars per million tokens; one number is both."""
    prices: dict[str, tuple[float, float]] = {}
    try:
        for model, value in parse_pairs(text).items():
            parts = [float(part) for part in value.split("/", 1)]
            prices[model] = (parts[0], parts[-1])
    except ValueError as exc:
        raise SettingsError(f"{variable}: expected model=prompt/completion dollars, {exc}") from exc
    return prices


def _write_prices(prices: Mapping[str, tuple[float, float]]) -> str:
    return ",".join(
        f"{model}={_write_number(prompt)}/{_write_number(completion)}" for model, (prompt, completion) in prices.items()
    )


def _read_limits(units: bool) -> Callable[[str, str], dict[str, Limit]]:
    # parse_limits raises LimitSyntaxError, a SettingsError, with the message operators know.
    return lambda text, variable: parse_limits(text, units=units)


#: Text as given (URLs, names, cron expressions); the default kind of a ``str`` field.
TEXT = Syntax(read=lambda text, variable: text, write=str)
INTEGER = Syntax(read=_number(int), write=str, empty_is_default=True)
#: A float, written without ``.0`` when whole (``3600``).
NUMBER = Syntax(read=_number(float), write=_write_number, empty_is_default=True)
#: ``on`` or ``off`` exactly, as a ``bool``.
ON_OFF = Syntax(read=_read_on_off, write=lambda value: "on" if value else "off")
#: ``a, b,c`` as a tuple of the non-empty, stripped names.
NAMES = Syntax(read=_read_names, write=",".join)
#: ``name=value,...`` as a dict of text.
PAIRS = Syntax(read=_read_pairs, write=_write_pairs)
#: ``name=count,...`` as a dict of ints.
COUNTS = Syntax(read=_read_counts, write=_write_pairs)
#: ``name=count/unit,...`` (unit s, m or h) as a dict of :class:`Limit`.
RATE_LIMITS = Syntax(read=_read_limits(True), write=format_limits)
#: ``model=count,...`` per minute, as a dict of :class:`Limit` with a 60-second period.
PER_MINUTE = Syntax(read=_read_limits(False), write=lambda limits: format_limits(limits, units=False))
#: ``model=prompt/completion,...`` as a dict of (prompt, completion) floats.
PRICES = Syntax(read=_read_prices, write=_write_prices)
