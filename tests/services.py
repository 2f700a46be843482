"""Where the test run's PostgreSQL and RabbitMQ are, and the statements run on them as administrator.

Set INTERLOCK_TEST_DATABASE_URL / INTERLOCK_TEST_BROKER_URL / INTERLOCK_TEST_RABBITMQ_API to point
elsewhere; the defaults are the local services that `scripts/services` starts.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

__all__ = ["ADMIN_DATABASE_URL", "BROKER_BASE_URL", "MANAGEMENT_URL", "admin_sql", "database_url", "scratch_database"]

ADMIN_DATABASE_URL = os.environ.get("INTERLOCK_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BROKER_BASE_URL = os.environ.get("INTERLOCK_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
MANAGEMENT_URL = os.environ.get("INTERLOCK_TEST_RABBITMQ_API", "http://127.0.0.1:15672/api")


def admin_sql(sql: str) -> None:
    """One statement as the administrator, outside a transaction (CREATE DATABASE, CREATE ROLE, ...)."""
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as connection:
        connection.execute(sql)


def database_url(name: str) -> str:
    """The administrator's URL for the database ``name`` on the test server."""
    return ADMIN_DATABASE_URL.rsplit("/", 1)[0] + f"/{name}"


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A new empty database named ``<prefix>_<random>`` for the block (its URL), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin_sql(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(name)
    finally:
        admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
