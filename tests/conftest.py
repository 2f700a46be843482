"""Fixtures on the real services: a scratch PostgreSQL database per run, a RabbitMQ vhost per module,
the fake LLM, and the stacks a test starts (stopped when it ends).

Where the services are: ``tests/services.py``; what a stack is: ``tests/stack.py``.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any
from urllib.parse import quote

import pytest
import requests
from sqlalchemy import Engine, text

from actors.runtime import Runtime
from interlock.settings import Settings
from models import Base
from models.migrations import upgrade
from testkit.fakes.openai_server import FakeOpenAIServer
from testkit.markers import BENCH_TABLES
from tests.services import BROKER_BASE_URL, MANAGEMENT_URL, scratch_database
from tests.stack import MakeStack, Stack, start_stack, stop_stack


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, migrated with Alembic."""
    with scratch_database("interlock_test") as url:
        upgrade(Settings.from_env({}, database_url=url))
        yield url


def _vhost_request(method: str, path: str, **kwargs: Any) -> None:
    response = requests.request(method, f"{MANAGEMENT_URL}{path}", auth=("guest", "guest"), timeout=10, **kwargs)
    response.raise_for_status()


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    """A RabbitMQ vhost of its own for each test module, deleted afterwards."""
    vhost = f"interlock-test-{uuid.uuid4().hex[:8]}"
    try:
        _vhost_request("PUT", f"/vhosts/{quote(vhost, safe='')}")
        _vhost_request(
            "PUT",
            f"/permissions/{quote(vhost, safe='')}/guest",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        )
        via_api = True
    except requests.RequestException:
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True)
        subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], check=True)
        via_api = False
    yield BROKER_BASE_URL.rstrip("/") + "/" + quote(vhost, safe="")
    if via_api:
        _vhost_request("DELETE", f"/vhosts/{quote(vhost, safe='')}")
    else:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False)


@pytest.fixture
def fake_llm() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def settings(database_url: str, broker_url: str, fake_llm: FakeOpenAIServer) -> Settings:
    """Settings on the real services with short backoffs and leases; tables emptied first."""
    _truncate(database_url)
    return Settings.from_env(
        {},
        database_url=database_url,
        broker_url=broker_url,
        openai_base_url=fake_llm.base_url,
        openai_api_key="sk-test-not-a-real-key",
        model="test-model",
        llm_timeout=5.0,
        min_backoff=0.2,
        max_backoff=2.0,
        lease_seconds=3.0,
        maintenance_interval=0.2,
        worker_threads=4,
        time_limit=60.0,
        soft_time_limit=55.0,
        auth="off",  # tests of authentication turn it on
    )


def _truncate(database_url: str) -> None:
    runtime = Runtime.open(Settings.from_env({}, database_url=database_url))
    try:
        with runtime.engine.begin() as connection:
            tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
            connection.execute(text(f"TRUNCATE {tables} CASCADE"))
    finally:
        runtime.close()


@pytest.fixture
def make_stack() -> Iterator[MakeStack]:
    """``make_stack(settings, worker=True)`` starts a stack (``tests/stack.py``) for this test.

    Every stack it started is stopped when the test ends, passed or failed, the newest first; a
    stack that fails to stop does not keep the others running. It takes no settings of its own, so
    a test on SQLite and the in-process broker needs neither PostgreSQL nor RabbitMQ.
    """
    with ExitStack() as started:

        def make(settings: Settings, *, worker: bool = True) -> Stack:
            stack = start_stack(settings, worker=worker)
            started.callback(stop_stack, stack)
            return stack

        yield make


@pytest.fixture
def stack(settings: Settings, make_stack: MakeStack) -> Stack:
    """The usual stack: API and worker on the ``settings`` fixture's services."""
    return make_stack(settings)


@pytest.fixture
def bench_runs(settings: Settings) -> Iterator[Engine]:
    """The marker tables in the test database; ``bench_work`` (``testkit.workflows``) writes to them."""
    runtime = Runtime.open(settings)
    with runtime.engine.begin() as connection:
        connection.exec_driver_sql(BENCH_TABLES)
    yield runtime.engine
    runtime.close()
