"""Scratch services for one run (a RabbitMQ vhost, a PostgreSQL database) and its measured child processes."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import uuid
from typing import Any
from urllib.parse import quote

import psutil
import psycopg
import requests

from testkit import processes
from testkit.markers import BENCH_TABLES

ADMIN_DATABASE_URL = os.environ.get("BENCH_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BROKER_BASE_URL = os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
MANAGEMENT_URL = os.environ.get("BENCH_RABBITMQ_API", "http://127.0.0.1:15672/api")

SYSTEMS = ("interlock", "celery", "dramatiq")


def _admin(sql: str) -> None:
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as connection:
        connection.execute(sql)  # type: ignore[arg-type]


class Scratch:
    """One vhost and one database for this run; both removed by ``close()``."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        # One vhost per system: the article's Celery queue "default" and Interlock's (with
        # x-max-priority and a dead-letter queue) cannot share a name in one vhost.
        self.vhosts = {system: f"bench-{tag}-{system}" for system in SYSTEMS}
        self.database = f"bench_{tag}"
        self.database_url = ADMIN_DATABASE_URL.rsplit("/", 1)[0] + f"/{self.database}"
        self._vhosts_made: list[str] = []
        self._db_made = False
        self._lock = threading.Lock()
        self._connection: psycopg.Connection[Any] | None = None

    def broker_url(self, system: str) -> str:
        return BROKER_BASE_URL.rstrip("/") + "/" + quote(self.vhosts[system], safe="")

    def _mgmt(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = requests.request(method, f"{MANAGEMENT_URL}{path}", auth=("guest", "guest"), timeout=10, **kwargs)
        response.raise_for_status()
        return response

    def open(self) -> Scratch:
        from interlock.settings import Settings
        from models.migrations import upgrade

        for vhost in self.vhosts.values():
            self._mgmt("PUT", f"/vhosts/{quote(vhost, safe='')}")
            self._vhosts_made.append(vhost)
            self._mgmt(
                "PUT",
                f"/permissions/{quote(vhost, safe='')}/guest",
                json={"configure": ".*", "write": ".*", "read": ".*"},
            )
        _admin(f'CREATE DATABASE "{self.database}"')
        self._db_made = True
        upgrade(Settings.from_env({}, database_url=self.database_url))
        with psycopg.connect(self.database_url, autocommit=True) as connection:
            connection.execute(BENCH_TABLES)  # type: ignore[arg-type]
        return self

    def purge_queues(self, system: str) -> None:
        """Empty every queue of a system's vhost (between workloads)."""
        vhost = quote(self.vhosts[system], safe="")
        for queue in self._mgmt("GET", f"/queues/{vhost}").json():
            name = quote(queue["name"], safe="")
            with contextlib.suppress(requests.RequestException):
                self._mgmt("DELETE", f"/queues/{vhost}/{name}/contents")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        for vhost in self._vhosts_made:
            try:
                self._mgmt("DELETE", f"/vhosts/{quote(vhost, safe='')}")
            except requests.RequestException as exc:
                print(f"bench: could not delete vhost {vhost}: {exc}", file=sys.stderr)
        if self._db_made:
            _admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """One statement on a single kept connection (PostgreSQL here allows 100 clients in all)."""
        with self._lock:
            if self._connection is None or self._connection.closed:
                self._connection = psycopg.connect(self.database_url, autocommit=True)
            return list(self._connection.execute(query, params or None).fetchall())  # type: ignore[call-overload]

    def execute(self, statement: str, params: dict[str, Any] | None = None) -> None:
        """A statement whose rows, if any, are not wanted (DDL, bulk inserts)."""
        with self._lock:
            if self._connection is None or self._connection.closed:
                self._connection = psycopg.connect(self.database_url, autocommit=True)
            self._connection.execute(statement, params)  # type: ignore[arg-type]

    def scalar(self, query: str, *params: Any) -> Any:
        return self.sql(query, *params)[0][0]


class Proc(processes.Proc):
    """A child command of the run (``testkit.processes.Proc``) whose processes can be measured."""

    def tree(self) -> list[psutil.Process]:
        """This process and its descendants."""
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss_mb(self) -> float:
        total = 0
        for proc in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += proc.memory_info().rss
        return total / 2**20
