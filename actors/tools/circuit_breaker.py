"""Circuit breakers around calls to outside hosts, shared by all worker processes.

After ``INTERLOCK_BREAKER_THRESHOLD`` consecutive failures of a host (5xx, timeouts, network
errors) its breaker opens for ``INTERLOCK_BREAKER_RESET`` seconds. Calls then fail fast with
:class:`CircuitOpen`, a transient error whose ``retry_after`` is the time left, so the task is
retried when the breaker may let a call through rather than failed. After the reset exactly one
call, the probe, goes through; its outcome closes the breaker or opens it again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from actors.errors import (
    CircuitOpen,
    HostUnavailable,
    InvalidInput,
    PermanentError,
    SoftTimeLimitExceeded,
    StageTimeLimitExceeded,
    TaskCancelled,
    TimeLimitExceeded,
    TransientError,
    UnsafeURL,
)
from actors.tools.http_safety import target_of
from interlock.settings import Settings
from models.breakers import (
    OPEN,
    admit_call,
    breaker_view,
    list_breakers,
    record_failure,
    record_success,
    release_probe,
)

__all__ = ["guard", "under_breaker", "breaker_states", "probe_lease"]

logger = logging.getLogger(__name__)

#: Added to the time left so that the retry arrives just after the breaker may admit it.
_MARGIN = 0.05


def probe_lease(settings: Settings) -> float:
    """How long a probe may take before another caller may probe instead (its worker may be gone)."""
    return settings.http_timeout * (settings.http_max_redirects + 2)


@contextmanager
def guard(sessions: sessionmaker[Session], target: str, *, settings: Settings) -> Iterator[None]:
    """Run the body as one call to ``target`` under its breaker.

    ``HostUnavailable`` counts as a failure; any other answer from the host (including 4xx, 429 or
    a body that is too large) shows the host is up. Refusals made before any contact (an unsafe
    URL, bad input) and interruptions give no verdict: a probe is handed back for the next caller.
    """
    with sessions.begin() as session:
        admission = admit_call(session, target, probe_lease=probe_lease(settings), reset=settings.breaker_reset)
    if not admission.allowed:
        raise CircuitOpen(
            f"circuit breaker for {target} is open; the call was not made, retrying in {admission.retry_after:.1f}s",
            retry_after=admission.retry_after + _MARGIN,
        )
    probe = admission.probe
    if probe:
        logger.info("circuit breaker for %s: probing", target)
    try:
        yield
    except HostUnavailable:
        with sessions.begin() as session:
            state = record_failure(
                session,
                target,
                probe=probe,
                threshold=settings.breaker_threshold,
                reset=settings.breaker_reset,
            )
        if state == OPEN:
            logger.warning("circuit breaker for %s is open for %.1fs", target, settings.breaker_reset)
        raise
    except (UnsafeURL, InvalidInput, TaskCancelled, TimeLimitExceeded, SoftTimeLimitExceeded, StageTimeLimitExceeded):
        # Refused before any contact, or the task stopped waiting (cancelled, out of time): no verdict.
        _no_verdict(sessions, target, probe)
        raise
    except (PermanentError, TransientError):
        _success(sessions, target, probe)
        raise
    except BaseException:
        _no_verdict(sessions, target, probe)
        raise
    else:
        if probe or admission.failures:
            _success(sessions, target, probe)


def under_breaker(
    sessions: sessionmaker[Session], url: str, *, settings: Settings, call: Callable[[], dict[str, Any]]
) -> Callable[[], dict[str, Any]]:
    """``call`` (a call to ``url``) made under the breaker of ``url``'s host."""

    def run() -> dict[str, Any]:
        with guard(sessions, target_of(url), settings=settings):
            return call()

    return run


def _success(sessions: sessionmaker[Session], target: str, probe: bool) -> None:
    with sessions.begin() as session:
        closed = record_success(session, target, probe=probe)
    if closed:
        logger.info("circuit breaker for %s closed after a successful probe", target)


def _no_verdict(sessions: sessionmaker[Session], target: str, probe: bool) -> None:
    if probe:
        with sessions.begin() as session:
            release_probe(session, target)


def breaker_states(sessions: sessionmaker[Session]) -> list[dict[str, Any]]:
    """Every breaker as ``{target, state, failures, opened_at, open_until, retry_in, updated_at}``."""
    with sessions() as session:
        return [breaker_view(b) for b in list_breakers(session)]
