"""Every schema change is a migration: upgrade, check and downgrade on PostgreSQL and SQLite."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from alembic import command
from interlock.settings import Settings
from models.migrations import alembic_config, check, upgrade
from tests.conftest import ADMIN_DATABASE_URL


@pytest.fixture
def scratch_postgres() -> str:
    name = f"interlock_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    yield ADMIN_DATABASE_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


@pytest.mark.postgres
def test_postgres_upgrade_check_downgrade(scratch_postgres: str) -> None:
    settings = Settings.from_env({}, database_url=scratch_postgres)
    ok, detail = check(settings)
    assert not ok and "behind" in detail
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
