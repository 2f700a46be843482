"""Every schema change is a migration: upgrade, check and downgrade on PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from alembic import command
from interlock.settings import Settings
from models.migrations import alembic_config, check, upgrade
from tests.services import scratch_database


@pytest.fixture
def scratch_postgres() -> Iterator[str]:
    with scratch_database("interlock_mig") as url:
        yield url


@pytest.mark.postgres
def test_postgres_upgrade_check_downgrade(scratch_postgres: str) -> None:
    settings = Settings.from_env({}, database_url=scratch_postgres)
    ok, detail = check(settings)
    assert not ok
    assert "behind" in detail
    upgrade(settings)
    ok, detail = check(settings)
    assert ok, detail
    command.downgrade(alembic_config(settings), "base")
    upgrade(settings)
    assert check(settings)[0]


def test_sqlite_upgrade_check_downgrade(tmp_path) -> None:
    settings = Settings.from_env({}, database_url=f"sqlite:///{tmp_path / 'm.db'}")
    upgrade(settings)
    ok, detail = check(settings)
    assert ok, detail
    command.downgrade(alembic_config(settings), "base")
    upgrade(settings)
    assert check(settings)[0]
