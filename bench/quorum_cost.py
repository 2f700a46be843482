"""What quorum queues cost: no-op throughput, classic against quorum, on one private RabbitMQ node.

``python -m bench.quorum_cost [--tasks 1500] [--rounds 2]``. One private node
(``testkit.private_rabbitmq``) serves both queue types, each in a vhost of its own, and one scratch
database holds the tasks; the modes alternate (classic, quorum, classic, ...) so that the machine's
other load falls on both. Each round submits ``--tasks`` ``bench_noop`` tasks through the app, waits
until RabbitMQ holds them all, then starts one ``interlock worker`` and measures how fast it drains
them: tasks / (last finish - first start), from the task rows. Prints each round and the ratio of
the medians (quorum / classic). A single node measures the queue type's own cost (Raft log, fsync),
not the replication to two more nodes, which a real cluster adds on the network.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import falcon.testing
import psycopg

from actors.broker import build_broker
from actors.catalogue import load_catalogue
from actors.queues import queue_depths
from actors.runtime import Runtime
from interlock.settings import Settings
from models.migrations import upgrade
from testkit.private_rabbitmq import PrivateRabbitMQ
from testkit.processes import Proc, base_env, interlock_command
from testkit.waiting import wait_until
from web.app import create_app

from .services import ADMIN_DATABASE_URL

__all__ = ["measure", "main"]

QUEUE_TYPES = ("classic", "quorum")


def _admin(sql: str) -> None:
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as connection:
        connection.execute(sql)  # type: ignore[arg-type]


def _drain_rate(settings: Settings, tasks: int, logs: Path, name: str) -> float:
    """Submit ``tasks`` no-op tasks, then time one worker draining them (tasks/s)."""
    runtime = Runtime.open(settings)
    catalogue = load_catalogue(settings)
    broker = build_broker(settings, runtime, catalogue)
    try:
        client = falcon.testing.TestClient(create_app(runtime, broker, catalogue))
        ids = []
        for n in range(tasks):
            response = client.simulate_post("/agent/execute", json={"query": f"noop {n}", "workflow": "bench_noop"})
            assert response.status_code == 202, response.text
            ids.append(response.json["task_id"])
        wait_until(
            lambda: queue_depths(broker, ["default"])[0]["ready"] >= tasks, timeout=120, what="the tasks published"
        )
    finally:
        broker.close()
    worker = Proc(
        interlock_command("worker", "--processes", "2"),
        env=base_env({**settings.to_env(), "INTERLOCK_WORKER_METRICS_PORT": "0"}),
        log=logs / f"{name}.log",
    )
    with worker:

        def finished() -> bool:
            with runtime.engine.connect() as connection:
                return bool(
                    connection.exec_driver_sql(
                        "SELECT count(*) FROM tasks WHERE state = 'SUCCESS' AND id = ANY(%(ids)s)", {"ids": ids}
                    ).scalar()
                    == tasks
                )

        wait_until(finished, timeout=60 + tasks / 5, interval=0.2, what=f"{tasks} tasks")
    with runtime.engine.connect() as connection:
        first, last = connection.exec_driver_sql(
            "SELECT min(started_at), max(finished_at) FROM tasks WHERE id = ANY(%(ids)s)", {"ids": ids}
        ).one()
    runtime.close()
    return tasks / (last - first).total_seconds()


def measure(*, tasks: int, rounds: int, logs: Path) -> dict[str, list[float]]:
    """Tasks/s per queue type, one value per round, on one private node and one scratch database."""
    database = f"bench_quorum_{uuid.uuid4().hex[:8]}"
    database_url = ADMIN_DATABASE_URL.rsplit("/", 1)[0] + f"/{database}"
    rates: dict[str, list[float]] = {queue_type: [] for queue_type in QUEUE_TYPES}
    _admin(f'CREATE DATABASE "{database}"')
    try:
        base = Settings.from_env({}, database_url=database_url, agent_modules="testkit.workflows", auth="off")
        upgrade(base)
        with PrivateRabbitMQ() as node:
            for queue_type in QUEUE_TYPES:
                node.ctl("add_vhost", queue_type)
                node.ctl("set_permissions", "-p", queue_type, "guest", ".*", ".*", ".*")
            for round_ in range(rounds):
                for queue_type in QUEUE_TYPES:
                    settings = base.replace(broker_url=node.url + queue_type, queue_type=queue_type)
                    rate = _drain_rate(settings, tasks, logs, f"{queue_type}-{round_}")
                    rates[queue_type].append(rate)
                    print(f"round {round_ + 1} {queue_type:8} {rate:7.1f} tasks/s", flush=True)
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quorum_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1500, help="no-op tasks per round and queue type")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    logs = Path(tempfile.mkdtemp(prefix="interlock-quorum-cost-"))
    started = time.monotonic()
    rates = measure(tasks=args.tasks, rounds=args.rounds, logs=logs)
    classic, quorum = (statistics.median(rates[t]) for t in QUEUE_TYPES)
    # Each round's ratio compares runs a minute apart, under about the same load from elsewhere.
    ratios = [q / c for c, q in zip(rates["classic"], rates["quorum"], strict=True)]
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    print(
        f"median: classic {classic:.1f} tasks/s, quorum {quorum:.1f} tasks/s; quorum/classic = "
        f"{quorum / classic:.2f}x; per round {', '.join(f'{r:.2f}x' for r in ratios)} "
        f"(median {statistics.median(ratios):.2f}x); {args.rounds} rounds x {args.tasks} no-op tasks, "
        f"one private node, {cores} cores, {time.monotonic() - started:.0f} s; worker logs in {logs}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
