"""A PostgreSQL restart in the middle of the work: every accepted task still ends.

The database is a private cluster (testkit/private_postgres.py), so restarting it disturbs nobody
else; workers are a real ``interlock worker`` with two processes, the API is the real app.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from interlock.settings import Settings
from models.migrations import upgrade
from models.tasks import TERMINAL_STATES, Task
from testkit.private_postgres import PrivatePostgres
from tests.processes import Proc, base_env
from tests.stack import Stack
from tests.support import wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    with PrivatePostgres() as cluster:
        yield cluster


class Submitter(threading.Thread):
    """Submits agent tasks through the API at a steady rate; keeps the ids of those accepted (202)."""

    def __init__(self, stack: Stack, *, per_second: float) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.interval = 1 / per_second
        self.accepted: list[str] = []
        self.refused = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopping.wait(self.interval):
            response = self.stack.client.simulate_post("/agent/execute", json={"query": f"restart {n}"})
            n += 1
            if response.status_code == 202:
                self.accepted.append(response.json["task_id"])
            else:
                self.refused += 1


def _states(stack: Stack, task_ids: list[str]) -> dict[str, str] | None:
    """Each task's state, or None while this process's own connections see the restart."""
    try:
        with stack.runtime.sessions() as session:
            return dict(session.execute(select(Task.id, Task.state).where(Task.id.in_(task_ids))).all())
    except OperationalError:
        return None


# Down 2 s, as the issue saw it. Down 8 s outlasts the retries of the write that parks a retry,
# so some retries wait in RabbitMQ's delay queue while their tasks keep a lease that no thread
# runs: the lease (15 s, longer than the outage) must lapse for the task to run again.
@pytest.mark.parametrize(("down_for", "lease"), [(2.0, 5.0), (8.0, 15.0)])
def test_every_accepted_task_ends_after_postgresql_restarts(
    settings: Settings, fake_llm, private_postgres: PrivatePostgres, tmp_path, make_stack, down_for: float, lease: float
) -> None:
    url = private_postgres.create_database("interlock")
    upgrade(Settings.from_env({}, database_url=url))
    settings = settings.replace(database_url=url, lease_seconds=lease, max_retries=5, rate_limits="")
    fake_llm.latency = 0.2  # each agent task: two LLM calls and a progress write every few tenths of a second
    stack = make_stack(settings, worker=False)
    submitter = Submitter(stack, per_second=10)
    try:
        with Proc(
            ["worker", "--processes", "2", "--threads", "8"], env=base_env(settings.to_env()), log=tmp_path / "w.log"
        ) as worker:
            wait_until(lambda: worker.output().count("worker process serving") == 2, timeout=60, what="2 processes")
            submitter.start()

            def busy() -> bool:
                with stack.runtime.sessions() as session:
                    running = session.scalar(select(func.count()).select_from(Task).where(Task.state == "PROCESSING"))
                return (running or 0) >= 4

            wait_until(busy, timeout=60, what="tasks in progress")
            down = private_postgres.restart(mode="fast", down_for=down_for)
            wait_until(lambda: len(submitter.accepted) >= 60, timeout=120, what="submissions after the restart")
            submitter.stopping.set()
            submitter.join(timeout=30)
            accepted = list(submitter.accepted)

            def all_ended() -> bool:
                states = _states(stack, accepted)
                return states is not None and all(state in TERMINAL_STATES for state in states.values())

            try:
                wait_until(all_ended, timeout=90, interval=0.5, what="every accepted task to end")
            except AssertionError:
                states = _states(stack, accepted) or {}
                stranded = {t: s for t, s in states.items() if s not in TERMINAL_STATES}
                raise AssertionError(
                    f"{len(stranded)} of {len(accepted)} accepted tasks never ended after a {down:.1f}s restart: "
                    f"{stranded}\n{worker.output()[-3000:]}"
                ) from None
            states = _states(stack, accepted)
            assert states is not None
            # Transient database errors are retried: nothing was lost and nothing failed for good.
            assert sorted(set(states.values())) == ["SUCCESS"], {t: s for t, s in states.items() if s != "SUCCESS"}
    finally:
        submitter.stopping.set()


def test_submissions_while_postgresql_is_down_are_answered_503_then_accepted(
    settings: Settings, private_postgres: PrivatePostgres, make_stack
) -> None:
    """A database that refuses connections (restarting, failing over) is a 503 to retry, never a 500."""
    url = private_postgres.create_database("interlock")
    upgrade(Settings.from_env({}, database_url=url))
    stack = make_stack(settings.replace(database_url=url), worker=False)
    assert stack.client.simulate_post("/agent/execute", json={"query": "before"}).status_code == 202
    private_postgres.stop()
    try:
        answers = [stack.client.simulate_post("/agent/execute", json={"query": f"down {i}"}) for i in range(3)]
    finally:
        private_postgres.start()
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "1"
        assert answer.json["title"] in {"Database unavailable", "Database connection reset"}, answer.json
    wait_until(
        lambda: stack.client.simulate_post("/agent/execute", json={"query": "after"}).status_code == 202,
        timeout=30,
        what="a submission accepted once PostgreSQL is back",
    )
