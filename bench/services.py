"""Scratch services for one run (a RabbitMQ vhost, a PostgreSQL database) and child processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
ADMIN_DATABASE_URL = os.environ.get("BENCH_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BROKER_BASE_URL = os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
MANAGEMENT_URL = os.environ.get("BENCH_RABBITMQ_API", "http://127.0.0.1:15672/api")

SYSTEMS = ("interlock", "celery", "dramatiq")

BENCH_TABLES = """
CREATE TABLE IF NOT EXISTS bench_runs (
    task_id text NOT NULL, system text NOT NULL, kind text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS ix_bench_runs_task ON bench_runs (task_id);
CREATE TABLE IF NOT EXISTS bench_counts (pid int PRIMARY KEY, n bigint NOT NULL);
"""


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
        from interlock.migrations import upgrade
        from interlock.settings import Settings

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
            try:
                self._mgmt("DELETE", f"/queues/{vhost}/{name}/contents")
            except requests.RequestException:
                pass

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

    def scalar(self, query: str, *params: Any) -> Any:
        return self.sql(query, *params)[0][0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Proc:
    """A child command in its own process group, logged to a file; ``stop()`` ends the group."""

    def __init__(self, args: list[str], *, env: dict[str, str], log: Path) -> None:
        self.args = args
        self.env = env
        self.log_path = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.args, env=self.env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

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
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total / 2**20

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        try:  # leftovers of the group (a pool child that ignored SIGTERM)
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._log.close()
        self.process = None


def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTERLOCK_", "OPENAI_", "BENCH_"))}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def wait_until(check: Callable[[], bool], *, timeout: float, interval: float = 0.05, what: str = "") -> float:
    """Poll ``check`` until true; returns the monotonic time it became true. Raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def wait_http(url: str, *, timeout: float = 60.0, proc: Proc | None = None) -> None:
    def up() -> bool:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"process exited early; see {proc.log_path}")
        try:
            return requests.get(url, timeout=1).status_code < 500
        except requests.RequestException:
            return False

    wait_until(up, timeout=timeout, interval=0.2, what=url)
