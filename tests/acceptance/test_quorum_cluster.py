"""Losing a RabbitMQ node under load, on three private nodes clustered on this host, in quorum mode.

A real ``interlock worker`` (two processes) and the real app submit and run ``bench_work`` tasks at
a steady rate while one node is shut down (its Erlang VM gone, like a lost host) and started again,
then a second one. Counted as W6 counts (``bench/workloads.py``): every accepted task's body
records its completion exactly once, none is lost. The machine's own RabbitMQ is not involved.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from interlock.settings import Settings
from testkit.private_rabbitmq import PrivateRabbitMQCluster
from tests.processes import Proc, base_env
from tests.stack import MakeStack, Stack
from tests.support import wait_for_state, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def cluster() -> Iterator[PrivateRabbitMQCluster]:
    with PrivateRabbitMQCluster() as nodes:
        yield nodes


class Submitter(threading.Thread):
    """Submits ``bench_work`` tasks through the app at a steady rate; every submission must be accepted
    (the task and its message commit together; the outbox relay publishes to a surviving node)."""

    def __init__(self, stack: Stack, *, per_second: float) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.interval = 1 / per_second
        self.accepted: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopping.wait(self.interval):
            self.accepted.append(
                self.stack.submit(query=f"node loss {n}", workflow="bench_work", context={"sleep": 0.3})
            )
            n += 1


def _done(engine: Engine, task_ids: list[str]) -> tuple[int, int]:
    """(tasks whose body recorded completion, tasks that recorded it more than once)."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT task_id, count(*) FROM bench_runs WHERE kind = 'done' AND task_id = ANY(:ids) GROUP BY 1"),
            {"ids": task_ids},
        ).all()
    return len(rows), sum(1 for _, count in rows if count > 1)


def _progress(engine: Engine, submitter: Submitter, *, more: int, what: str) -> None:
    """Wait until ``more`` further tasks have completed: the work goes on."""
    before = _done(engine, list(submitter.accepted))[0]
    wait_until(lambda: _done(engine, list(submitter.accepted))[0] >= before + more, timeout=60, what=what)


def test_losing_a_node_then_another_loses_nothing_and_runs_nothing_twice(
    settings: Settings, cluster: PrivateRabbitMQCluster, bench_runs: Engine, make_stack: MakeStack, tmp_path
) -> None:
    settings = settings.replace(
        broker_url=cluster.url, queue_type="quorum", agent_modules="testkit.workflows", max_deliveries=10
    )
    stack = make_stack(settings, worker=False)
    env = base_env(settings.to_env())
    started = time.monotonic()
    with Proc(["worker", "--processes", "2", "--threads", "8"], env=env, log=tmp_path / "worker.log") as worker:
        submitter = Submitter(stack, per_second=5)
        submitter.start()
        try:
            _progress(bench_runs, submitter, more=10, what="work before any fault")
            for victim in cluster.nodes[:2]:  # the first node holds the queues' leaders: the worst case
                victim.shutdown()  # returns once its VM is gone
                down = time.monotonic()
                assert victim.node not in cluster.running_nodes()
                _progress(bench_runs, submitter, more=15, what=f"work while {victim.node} is down")
                recovered = time.monotonic() - down
                victim.start()
                wait_until(lambda v=victim: v.node in cluster.running_nodes(), timeout=60, what="the node back")
                print(
                    f"{victim.node}: 15 more tasks done {recovered:.1f} s after it was down; back "
                    f"{time.monotonic() - down:.1f} s after"
                )
            _progress(bench_runs, submitter, more=10, what="work after both came back")
        finally:
            submitter.stopping.set()
            submitter.join()
        accepted = submitter.accepted
        wait_until(
            lambda: _done(bench_runs, accepted)[0] == len(accepted),
            timeout=90,
            what=f"all {len(accepted)} tasks (log: {tmp_path / 'worker.log'})",
        )
        done, twice = _done(bench_runs, accepted)
        assert (len(accepted) - done, twice) == (0, 0), worker.output()[-3000:]
        assert "connection error" in worker.output().lower(), "the workers never lost a connection"
        for task_id in accepted:
            wait_for_state(stack.runtime.sessions, task_id, "SUCCESS", timeout=30)
    print(f"quorum cluster: {len(accepted)} tasks, 0 lost, 0 twice, {time.monotonic() - started:.0f} s")
