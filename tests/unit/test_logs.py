"""What a process's log shows: one line per real event, not a library's flood during an outage."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from interlock.logs import configure_logging


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    pika_level = logging.getLogger("pika").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("pika").setLevel(pika_level)


def test_pika_connection_errors_do_not_flood_the_log(
    restored_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO")
    logging.getLogger("pika.adapters.blocking_connection").error("Connection workflow failed: refused")
    logging.getLogger("actors.submit").warning("publishing task t-1 failed (refused)")
    written = capsys.readouterr().err
    assert "Connection workflow failed" not in written
    assert "publishing task t-1 failed" in written
