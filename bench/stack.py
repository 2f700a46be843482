"""Interlock on private services: the stack that ``bench faults`` and ``bench soak`` run under load.

A PostgreSQL cluster and a RabbitMQ node of its own (``testkit.private_postgres``,
``testkit.private_rabbitmq``: the machine's services are never touched), ``interlock api`` and
``interlock worker`` (and, when asked, ``interlock scheduler``) as shipped, each restartable alone.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg

from interlock.settings import Settings
from testkit.markers import BENCH_TABLES
from testkit.private_postgres import PrivatePostgres
from testkit.private_rabbitmq import PrivateRabbitMQ
from testkit.processes import base_env, free_port, interlock_command, wait_http

from .services import Proc

__all__ = ["Stack", "children"]


class Stack:
    """The private services and Interlock's processes, restartable one by one."""

    def __init__(self, out: Path, *, database: str = "faults", env: dict[str, str] | None = None) -> None:
        self.out = out
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.postgres = PrivatePostgres(options={"max_connections": "300"})
        self.rabbit = PrivateRabbitMQ()
        self.database = database
        self.database_url = ""
        self.extra_env = dict(env or {})
        self.api: Proc | None = None
        self.worker: Proc | None = None
        self.scheduler: Proc | None = None
        self.url = ""
        self._generation = 0

    def start(self, *, scheduler: bool = False) -> None:
        from models.migrations import upgrade

        self.postgres.start()
        self.database_url = self.postgres.create_database(self.database)
        upgrade(Settings.from_env({}, database_url=self.database_url))
        with psycopg.connect(self.database_url, autocommit=True) as connection:
            connection.execute(BENCH_TABLES)  # type: ignore[arg-type]
        self.rabbit.start()
        self.start_worker()
        self.start_api()
        if scheduler:
            self.scheduler = self._spawn("scheduler", interlock_command("scheduler"))

    def env(self) -> dict[str, str]:
        return base_env(
            {
                "INTERLOCK_DATABASE_URL": self.database_url,
                "INTERLOCK_BROKER_URL": self.rabbit.url,
                "INTERLOCK_AGENT_MODULES": "testkit.workflows",
                "INTERLOCK_AUTH": "off",
                "INTERLOCK_WORKER_METRICS_PORT": "0",
                # The chords' scraper and tools members would queue behind the default start limits.
                "INTERLOCK_RATE_LIMITS": "scraper=1000/s,tools=1000/s",
                **self.extra_env,
            }
        )

    def _spawn(self, name: str, args: list[str]) -> Proc:
        self._generation += 1
        return Proc(args, env=self.env(), log=self.logs / f"{name}-{self._generation}.log").start()

    def start_worker(self) -> None:
        self.worker = self._spawn("worker", interlock_command("worker"))

    def start_api(self) -> None:
        port = free_port()
        self.api = self._spawn("api", interlock_command("api", "--bind", f"127.0.0.1:{port}"))
        self.url = f"http://127.0.0.1:{port}"
        wait_http(f"{self.url}/healthz", proc=self.api)

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Read the private database; retried while it restarts."""
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(self.database_url, autocommit=True, connect_timeout=3) as connection:
                    return list(connection.execute(query, params).fetchall())  # type: ignore[arg-type]
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)  # the database is restarting: try again

    def close(self) -> None:
        for proc in (self.scheduler, self.api, self.worker):
            if proc is not None:
                proc.stop()
        self.rabbit.close()
        self.postgres.close()


def children(proc: Proc | None) -> list[psutil.Process]:
    """The worker processes of a supervisor (or gunicorn's workers), not helpers such as resource trackers."""
    found = []
    for child in proc.tree()[1:] if proc is not None else []:
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline()):
                found.append(child)
    return found
