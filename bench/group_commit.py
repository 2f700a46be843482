"""``python -m bench.group_commit``: claims and finishes per second, one round trip each vs group commit.

N threads each claim, then finish, M tasks of their own through ``models.task_lifecycle``, first
with every thread making its own statement (``INTERLOCK_GROUP_COMMIT=off``), then through the
process's writer (``on``), in the same run on a scratch database. Prints ops/s, this process's CPU
per operation, statements (commits) per operation and the batch sizes seen, and the ratios.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import Engine, text

from interlock.settings import Settings
from models import group_commit, task_lifecycle
from models.database import make_engine, make_sessionmaker
from models.migrations import upgrade
from models.tasks import TaskState

from .services import ADMIN_DATABASE_URL

__all__ = ["main"]

OWNER = "bench-worker"


@dataclass
class Result:
    mode: str
    kind: str
    ops: int
    seconds: float
    cpu: float
    batches: Counter[int]

    @property
    def rate(self) -> float:
        return self.ops / self.seconds

    def row(self) -> str:
        statements = sum(self.batches.values()) or self.ops
        sizes = ", ".join(f"{size}×{n}" for size, n in sorted(self.batches.items())[-4:]) or "1 each"
        return (
            f"| {self.kind} | {self.mode} | {self.rate:,.0f} | {self.cpu / self.ops * 1000:.2f} "
            f"| {statements / self.ops:.2f} | {sizes} |"
        )


def _admin(sql: str) -> None:
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as connection:
        connection.execute(sql)  # type: ignore[arg-type]


def _tasks(engine: Engine, n: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO tasks (id, workflow, actor, queue, priority, state, progress, input, attempts, tenant,"
                " wake_pending, created_at, updated_at)"
                " SELECT id, 'bench_noop', 'bench_noop', 'default', 0, 'PENDING', 0, '{}', 0, 'system', false,"
                " now(), now() FROM unnest(CAST(:ids AS text[])) AS id"
            ),
            {"ids": ids},
        )
    return ids


def _measure(engine: Engine, mode: str, kind: str, ids: list[str], threads: int) -> Result:
    sessions = make_sessionmaker(engine)
    share = len(ids) // threads
    start_line = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def claim(task_id: str) -> None:
        task_lifecycle.claim(sessions, task_id, owner=OWNER, lease_seconds=300, max_deliveries=5)

    def finish(task_id: str) -> None:
        task_lifecycle.finish(
            sessions,
            task_id,
            state=TaskState.SUCCESS,
            owner=OWNER,
            parent_id=None,
            then=lambda _session, _ended: None,
            result={"status": "success"},
        )

    operation = claim if kind == "claim" else finish

    def run(mine: list[str]) -> None:
        start_line.wait()
        try:
            for task_id in mine:
                operation(task_id)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(ids[i * share : (i + 1) * share],)) for i in range(threads)]
    for worker in workers:
        worker.start()
    writer = group_commit.writer_for(engine)
    before = Counter(writer.batch_sizes.get(kind, Counter())) if writer else Counter()
    start_line.wait()
    started, cpu = time.perf_counter(), time.process_time()
    for worker in workers:
        worker.join()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if errors:
        raise errors[0]
    batches = writer.batch_sizes.get(kind, Counter()) - before if writer else Counter()
    return Result(mode, kind, share * threads, seconds, cpu, batches)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.group_commit", description=__doc__)
    parser.add_argument("--threads", type=int, default=32, help="caller threads (default 32)")
    parser.add_argument("--per-thread", type=int, default=100, help="tasks each thread claims and finishes")
    parser.add_argument("--pool", type=int, default=10, help="connections per engine (default 10, the setting's)")
    args = parser.parse_args(argv)
    database = f"bench_gc_{uuid.uuid4().hex[:8]}"
    url = ADMIN_DATABASE_URL.rsplit("/", 1)[0] + f"/{database}"
    _admin(f'CREATE DATABASE "{database}"')
    results: list[Result] = []
    try:
        upgrade(Settings.from_env({}, database_url=url))
        for mode in ("off", "on"):
            engine = make_engine(url, pool_size=args.pool, group_commit_on=mode == "on")
            try:
                ids = _tasks(engine, args.threads * args.per_thread)
                for kind in ("claim", "finish"):
                    results.append(_measure(engine, mode, kind, ids, args.threads))
            finally:
                group_commit.close_writer(engine)
                engine.dispose()
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    print(f"{args.threads} threads x {args.per_thread} tasks, pool {args.pool}")
    print("| kind | group commit | ops/s | CPU ms/op | statements/op | largest batches (size×count) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for result in results:
        print(result.row())
    by: dict[tuple[str, str], Any] = {(r.mode, r.kind): r for r in results}
    for kind in ("claim", "finish"):
        off, on = by["off", kind], by["on", kind]
        print(
            f"{kind}: group commit {on.rate / off.rate:.2f}x the ops/s, "
            f"{(on.cpu / on.ops) / (off.cpu / off.ops):.2f}x the CPU per op"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
