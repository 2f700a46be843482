"""Fixtures on the real services: a scratch PostgreSQL database and a RabbitMQ vhost per run.

Set INTERLOCK_TEST_DATABASE_URL / INTERLOCK_TEST_BROKER_URL to point elsewhere; the defaults are
the local services that `scripts/services` starts.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import falcon.testing
import psycopg
import pytest
import requests
from sqlalchemy import Engine, text

from actors.catalogue import load_catalogue
from actors.runtime import Runtime
from interlock.settings import Settings
from models import Base
from models.migrations import upgrade
from testkit.fakes.openai_server import FakeOpenAIServer
from testkit.markers import BENCH_TABLES

ADMIN_DATABASE_URL = os.environ.get("INTERLOCK_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BROKER_BASE_URL = os.environ.get("INTERLOCK_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
MANAGEMENT_URL = os.environ.get("INTERLOCK_TEST_RABBITMQ_API", "http://127.0.0.1:15672/api")


def _admin(sql: str) -> None:
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as connection:
        connection.execute(sql)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, migrated with Alembic."""
    name = f"interlock_test_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{name}"')
    url = ADMIN_DATABASE_URL.rsplit("/", 1)[0] + f"/{name}"
    upgrade(Settings.from_env({}, database_url=url))
    yield url
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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


@dataclass
class Stack:
    """An API (Falcon test client) and an in-process worker on the same real services."""

    settings: Settings
    runtime: Runtime
    broker: Any
    client: falcon.testing.TestClient
    worker: Any
    worker_broker: Any
    worker_runtime: Runtime

    def submit(self, **body: Any) -> str:
        response = self.client.simulate_post("/agent/execute", json=body)
        assert response.status_code == 202, response.text
        return str(response.json["task_id"])


def start_stack(settings: Settings, *, worker: bool = True) -> Stack:
    """API and worker in this process; with the in-process broker they must share one broker."""
    from actors.broker import build_broker
    from interlock.cli.worker import start_worker
    from web.app import create_app

    catalogue = load_catalogue(settings)
    worker_obj = worker_broker = worker_runtime = None
    if worker:
        worker_obj, worker_broker, worker_runtime = start_worker(settings, queues=None, threads=settings.worker_threads)
    if worker and not settings.uses_rabbitmq:
        runtime, broker = Runtime.open(settings), worker_broker
    else:
        runtime = Runtime.open(settings)
        broker = build_broker(settings, runtime, catalogue)
    client = falcon.testing.TestClient(create_app(runtime, broker, catalogue))
    return Stack(settings, runtime, broker, client, worker_obj, worker_broker, worker_runtime)  # type: ignore[arg-type]


def stop_stack(stack: Stack) -> None:
    if stack.worker is not None:
        stack.worker.stop()
        stack.worker_broker.close()
        stack.worker_runtime.close()
    if stack.broker is not stack.worker_broker:
        stack.broker.close()
    stack.runtime.close()


@pytest.fixture
def bench_runs(settings: Settings) -> Iterator[Engine]:
    """The marker tables in the test database; ``bench_work`` (``testkit.workflows``) writes to them."""
    runtime = Runtime.open(settings)
    with runtime.engine.begin() as connection:
        connection.exec_driver_sql(BENCH_TABLES)
    yield runtime.engine
    runtime.close()


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    running = start_stack(settings)
    yield running
    stop_stack(running)
