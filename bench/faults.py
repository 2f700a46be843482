"""Faults under load (issue 17): does any fault lose or double work, and how fast does throughput come back?

``python -m bench faults`` runs Interlock (``interlock api`` and ``interlock worker``) against a
PostgreSQL cluster and a RabbitMQ node of its own (``testkit.private_postgres``,
``testkit.private_rabbitmq``: the machine's services are never touched), submits ``bench_work``
tasks (two transactional steps around a sleep of about a second) over HTTP at a fixed rate, and
injects one fault at a time, a few times each. Every submission is counted by its answer; at the
end every accepted task must have finished exactly once (``bench_runs``' ``done`` marker is written
in the transaction of the workflow's last step, so a body completed twice shows as two rows).
Recovery is the time from the fault's end until completions per second are back to 80 % of the
submission rate.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import statistics
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
import requests

from interlock.settings import Settings
from testkit.markers import BENCH_TABLES
from testkit.private_postgres import PrivatePostgres
from testkit.private_rabbitmq import PrivateRabbitMQ
from testkit.processes import base_env, free_port, interlock_command, wait_http
from testkit.waiting import WaitTimeout, wait_until

from .services import Proc

#: Lease of a task (s): short, so a frozen worker's lease lapses within the benchmark.
LEASE_SECONDS = 8
TASK_SECONDS = 1.0


@dataclass
class Phase:
    """One injection of one fault, and what the load saw meanwhile."""

    fault: str
    round: int
    began: float = 0.0  # time.time() of the injection
    ended: float = 0.0  # time.time() when the service was whole again
    answers: Counter[str] = field(default_factory=Counter)
    accepted: list[str] = field(default_factory=list)
    note: str = ""


class Stack:
    """The private services and Interlock's processes, restartable one by one."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.postgres = PrivatePostgres(options={"max_connections": "300"})
        self.rabbit = PrivateRabbitMQ()
        self.database_url = ""
        self.api: Proc | None = None
        self.worker: Proc | None = None
        self.url = ""
        self._generation = 0

    def start(self) -> None:
        from models.migrations import upgrade

        self.postgres.start()
        self.database_url = self.postgres.create_database("faults")
        upgrade(Settings.from_env({}, database_url=self.database_url))
        with psycopg.connect(self.database_url, autocommit=True) as connection:
            connection.execute(BENCH_TABLES)  # type: ignore[arg-type]
        self.rabbit.start()
        self.start_worker()
        self.start_api()

    def env(self) -> dict[str, str]:
        return base_env(
            {
                "INTERLOCK_DATABASE_URL": self.database_url,
                "INTERLOCK_BROKER_URL": self.rabbit.url,
                "INTERLOCK_AGENT_MODULES": "testkit.workflows",
                "INTERLOCK_AUTH": "off",
                "INTERLOCK_WORKER_METRICS_PORT": "0",
                "INTERLOCK_LEASE_SECONDS": str(LEASE_SECONDS),
                "INTERLOCK_MAX_DELIVERIES": "20",  # faults redeliver; the poison cap is tested elsewhere
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
                    return list(connection.execute(query, params).fetchall())
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)  # the database is restarting: try again

    def close(self) -> None:
        for proc in (self.api, self.worker):
            if proc is not None:
                proc.stop()
        self.rabbit.close()
        self.postgres.close()


class Load:
    """Submissions over HTTP at ``rate`` per second from a few threads, each counted under the current phase."""

    def __init__(self, stack: Stack, rate: float) -> None:
        self.stack = stack
        self.rate = rate
        self.phase = Phase("steady", 0)
        self.phases: list[Phase] = [self.phase]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(4)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def enter(self, phase: Phase) -> None:
        with self._lock:
            self.phase = phase
            self.phases.append(phase)

    def _run(self, k: int) -> None:
        session = requests.Session()
        interval = len(self._threads) / self.rate
        next_at = time.monotonic() + k * interval / len(self._threads)
        body = {"workflow": "bench_work", "query": "fault", "context": {"sleep": TASK_SECONDS}}
        while not self._stop.is_set():
            self._stop.wait(max(0.0, next_at - time.monotonic()))
            next_at += interval
            phase = self.phase
            try:
                response = session.post(
                    f"{self.stack.url}/agent/execute",
                    json=body,
                    headers={"Idempotency-Key": str(uuid.uuid4())},
                    timeout=10,
                )
                answer = str(response.status_code)
                task_id = response.json().get("task_id") if response.status_code in (200, 202) else None
            except (requests.RequestException, ValueError) as exc:
                answer, task_id = f"no answer ({type(exc).__name__})", None
            with self._lock:
                phase.answers[answer] += 1
                if task_id:
                    phase.accepted.append(str(task_id))


# -- the faults -------------------------------------------------------------------------------------


def _children(proc: Proc | None) -> list[psutil.Process]:
    """The worker processes of a supervisor (or gunicorn's workers), not helpers such as resource trackers."""
    found = []
    for child in proc.tree()[1:] if proc is not None else []:
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline()):
                found.append(child)
    return found


def kill_worker_process(stack: Stack) -> str:
    victim = random.choice(_children(stack.worker))
    os.kill(victim.pid, signal.SIGKILL)
    return f"SIGKILL worker process {victim.pid}"


def kill_whole_worker(stack: Stack) -> str:
    """The supervisor and its children at once; the process manager (here: this benchmark) starts it again."""
    assert stack.worker is not None
    for proc in stack.worker.tree():
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)
    stack.start_worker()
    return "SIGKILL supervisor and children, started again"


def kill_api_process(stack: Stack) -> str:
    victim = random.choice(_children(stack.api))
    os.kill(victim.pid, signal.SIGKILL)
    return f"SIGKILL gunicorn worker {victim.pid} (its master starts another)"


def restart_rabbitmq(stack: Stack) -> str:
    stack.rabbit.stop_app()
    time.sleep(5)  # the outage itself
    stack.rabbit.start_app()
    return "rabbitmqctl stop_app, 5 s, start_app"


def close_rabbitmq_connections(stack: Stack) -> str:
    stack.rabbit.close_all_connections()
    return "rabbitmqctl close_all_connections"


def restart_postgres(stack: Stack) -> str:
    down = stack.postgres.restart(mode="fast", down_for=2.0)
    return f"pg_ctl restart -m fast, down {down:.1f} s"


def terminate_backends(stack: Stack) -> str:
    rows = stack.sql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    return f"pg_terminate_backend of {rows[0][0]} backends"


def freeze_worker_past_lease(stack: Stack) -> str:
    victim = random.choice(_children(stack.worker))
    victim.suspend()
    time.sleep(LEASE_SECONDS + 4)  # frozen past its lease: its tasks go to others
    victim.resume()
    return f"SIGSTOP worker process {victim.pid} for {LEASE_SECONDS + 4} s (lease {LEASE_SECONDS} s), SIGCONT"


def low_consumer_timeout(stack: Stack) -> str:
    """RabbitMQ closes a channel whose delivery stays unacknowledged past the timeout (checked about once a
    minute): a prefetched message waiting behind busy threads is enough."""
    stack.rabbit.set_consumer_timeout(3000)
    time.sleep(75)
    stack.rabbit.set_consumer_timeout(1_800_000)
    return "consumer_timeout 3 s for 75 s"


FAULTS: dict[str, Callable[[Stack], str]] = {
    "worker-process-kill": kill_worker_process,
    "worker-kill": kill_whole_worker,
    "api-process-kill": kill_api_process,
    "rabbitmq-restart": restart_rabbitmq,
    "rabbitmq-connections-closed": close_rabbitmq_connections,
    "postgres-restart": restart_postgres,
    "postgres-backends-terminated": terminate_backends,
    "worker-frozen-past-lease": freeze_worker_past_lease,
    "rabbitmq-consumer-timeout": low_consumer_timeout,
}


# -- the run ----------------------------------------------------------------------------------------


def run_faults(out: Path, *, rounds: int, rate: float, only: list[str]) -> int:
    chosen = only or list(FAULTS)
    stack = Stack(out)
    load = Load(stack, rate)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        stack.start()
        load.start()
        _settle(stack, seconds=8)
        for name in chosen:
            for k in range(1, rounds + 1):
                phase = Phase(name, k)
                load.enter(phase)
                phase.began = time.time()
                phase.note = FAULTS[name](stack)
                phase.ended = time.time()
                print(f"  {name} #{k}: {phase.note}", flush=True)
                _settle(stack, seconds=12)
        load.enter(Phase("drain", 0))
        load.stop()
        accepted = [task_id for phase in load.phases for task_id in phase.accepted]
        with contextlib.suppress(WaitTimeout):
            wait_until(
                lambda: _done_count(stack, accepted) >= len(accepted), timeout=180, interval=1, what="every task"
            )
        report = _report(stack, load, rate)
    finally:
        load.stop()
        stack.close()
    meta = {"started": started, "rounds": rounds, "rate_per_s": rate, "task_seconds": TASK_SECONDS}
    (out / "faults.json").write_text(json.dumps({"meta": meta, "faults": report}, indent=2, default=str))
    text = markdown(report, meta)
    (out / "FAULTS.md").write_text(text)
    print(text)
    return 0 if all(row["lost"] == 0 and row["twice"] == 0 for row in report) else 1


def _settle(stack: Stack, *, seconds: float) -> None:
    """Let the load run between faults (a fixed stretch of steady state, not a wait for work)."""
    time.sleep(seconds)


def _done_count(stack: Stack, ids: list[str]) -> int:
    rows = stack.sql("SELECT count(DISTINCT task_id) FROM bench_runs WHERE kind = 'done' AND task_id = ANY(%s)", [ids])
    return int(rows[0][0])


def _report(stack: Stack, load: Load, rate: float) -> list[dict[str, Any]]:
    done_at = sorted(row[0].timestamp() for row in stack.sql("SELECT at FROM bench_runs WHERE kind = 'done'"))
    by_fault: dict[str, list[Phase]] = defaultdict(list)
    for phase in load.phases:
        by_fault[phase.fault].append(phase)
    rows = []
    for fault, phases in by_fault.items():
        ids = [task_id for phase in phases for task_id in phase.accepted]
        counts = stack.sql(
            "SELECT task_id, count(*) FILTER (WHERE kind = 'done') FROM bench_runs WHERE task_id = ANY(%s) "
            "GROUP BY task_id",
            [ids],
        )
        done = {task_id: n for task_id, n in counts if n > 0}
        states = dict(stack.sql("SELECT state, count(*) FROM tasks WHERE id = ANY(%s) GROUP BY state", [ids]))
        answers: Counter[str] = Counter()
        for phase in phases:
            answers.update(phase.answers)
        recovery = [_recovery(done_at, phase.ended, rate) for phase in phases if phase.ended]
        rows.append(
            {
                "fault": fault,
                "injections": len([p for p in phases if p.ended]),
                "how": phases[0].note,
                "answers": dict(answers),
                "accepted": len(ids),
                "lost": len([task_id for task_id in ids if task_id not in done]),
                "twice": len([n for n in done.values() if n > 1]),
                "states": states,
                "attempts_over_1": int(
                    stack.sql("SELECT count(*) FROM tasks WHERE id = ANY(%s) AND attempts > 1", [ids])[0][0]
                ),
                "recovery_s": [r for r in recovery if r is not None],
                "recovery_max_s": max((r for r in recovery if r is not None), default=None),
                "not_recovered": len([r for r in recovery if r is None]),
            }
        )
    return rows


def _recovery(done_at: list[float], ended: float, rate: float, window: float = 2.0) -> float | None:
    """Seconds from ``ended`` until a ``window`` of completions reaches 80 % of the submission rate."""
    wanted = 0.8 * rate * window
    t = ended
    while t < ended + 120:
        n = sum(1 for at in done_at if t <= at < t + window)
        if n >= wanted:
            return round(max(0.0, t - ended), 1)
        t += 0.25
    return None


def markdown(report: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Faults under load (issue 17)",
        "",
        f"`python -m bench faults`, {meta['started']}: HTTP submissions of `bench_work` (two transactional "
        f"steps around a {meta['task_seconds']} s sleep) at {meta['rate_per_s']}/s, each fault injected "
        f"{meta['rounds']} times, 12 s of load after each. Private PostgreSQL and RabbitMQ (the machine's are "
        "never touched); `interlock api` and `interlock worker` as shipped (lease "
        f"{LEASE_SECONDS} s for the freeze to lapse within the run).",
        "",
        "Lost: accepted (2xx) and never finished; twice: the body's last step completed more than once. "
        "Recovery: from the fault's end until completions per second are back to 80 % of the submission rate. "
        "Tasks are counted under the fault during which they were submitted (a task submitted just before "
        "an injection and restarted by it shows in the row above).",
        "",
        "| fault | how | answers | accepted | lost | twice | restarted (attempts > 1) | recovery (max) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in report:
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(row["answers"].items()))
        recovery = "-" if row["recovery_max_s"] is None else f"{row['recovery_max_s']} s"
        if row["not_recovered"]:
            recovery += f" ({row['not_recovered']} not within 120 s)"
        lines.append(
            f"| {row['fault']} | {row['how']} | {answers} | {row['accepted']} | {row['lost']} | {row['twice']} "
            f"| {row['attempts_over_1']} | {recovery} |"
        )
    recoveries = [r for row in report for r in row["recovery_s"]]
    if recoveries:
        lines += ["", f"Recovery over all injections: median {statistics.median(recoveries):.1f} s."]
    return "\n".join(lines) + "\n"
