"""Faults under load (issue 17): does any fault lose or double work, and how fast does throughput come back?

``python -m bench faults`` runs Interlock on private services (``bench.stack``), submits the mix of
``bench.load`` over HTTP at a fixed rate (tasks of about a second, checkpointed workflows, chords),
and injects one fault at a time, a few times each. Every submission is counted by its answer; at the
end every accepted task must have finished exactly once: in SUCCESS (a chord with all its children),
``bench_work``'s ``done`` marker written once (it commits with the last step's checkpoint, so a body
completed twice shows as two rows), an agent's SUCCESS recorded once. Recovery is the time from the
fault's end until completions per second are back to 80 % of the submission rate.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from testkit.waiting import WaitTimeout, wait_until

from .load import KINDS, MIX, TASK_SECONDS, Load, Phase
from .stack import Stack, children

#: Lease of a task (s): short, so a frozen worker's lease lapses within the benchmark.
LEASE_SECONDS = 8


def _stack(out: Path) -> Stack:
    return Stack(
        out,
        env={
            "INTERLOCK_LEASE_SECONDS": str(LEASE_SECONDS),
            "INTERLOCK_MAX_DELIVERIES": "20",  # faults redeliver; the poison cap is tested elsewhere
        },
    )


# -- the faults -------------------------------------------------------------------------------------


def kill_worker_process(stack: Stack) -> str:
    victim = random.choice(children(stack.worker))
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
    victim = random.choice(children(stack.api))
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
    victim = random.choice(children(stack.worker))
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
    stack = _stack(out)
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
        accepted = load.accepted()
        with contextlib.suppress(WaitTimeout):
            wait_until(lambda: unfinished(stack, accepted) == 0, timeout=180, interval=1, what="every task")
        report = _report(stack, load, rate)
    finally:
        load.stop()
        stack.close()
    meta = {"started": started, "rounds": rounds, "rate_per_s": rate, "task_seconds": TASK_SECONDS, "mix": MIX}
    (out / "faults.json").write_text(json.dumps({"meta": meta, "faults": report}, indent=2, default=str))
    text = markdown(report, meta)
    (out / "FAULTS.md").write_text(text)
    print(text)
    return 0 if all(sum(row["lost"].values()) == 0 and sum(row["twice"].values()) == 0 for row in report) else 1


def _settle(stack: Stack, *, seconds: float) -> None:
    """Let the load run between faults (a fixed stretch of steady state, not a wait for work)."""
    time.sleep(seconds)


def unfinished(stack: Stack, accepted: list[tuple[str, str]]) -> int:
    """Accepted tasks, or children of accepted chords, not yet in a final state."""
    ids = [task_id for _, task_id in accepted]
    rows = stack.sql(
        "SELECT count(*) FROM tasks WHERE (id = ANY(%s) OR parent_id = ANY(%s)) "
        "AND state NOT IN ('SUCCESS', 'FAILURE', 'CANCELLED')",
        [ids, ids],
    )
    return int(rows[0][0]) + len(
        set(ids) - {row[0] for row in stack.sql("SELECT id FROM tasks WHERE id = ANY(%s)", [ids])}
    )


def outcomes(stack: Stack, kind: str, ids: list[str]) -> tuple[int, int]:
    """(lost, twice) among accepted tasks of one kind.

    Lost: the task, or for a chord the task or any of its children, not in SUCCESS after the drain.
    Twice: ``bench_work``'s last transactional step committed more than once (its ``done`` markers);
    for the agents, a task or child that recorded its SUCCESS more than once.
    """
    if not ids:
        return 0, 0
    bad = stack.sql(
        "SELECT DISTINCT coalesce(parent_id, id) FROM tasks WHERE (id = ANY(%s) OR parent_id = ANY(%s)) "
        "AND state <> 'SUCCESS'",
        [ids, ids],
    )
    found = {row[0] for row in stack.sql("SELECT id FROM tasks WHERE id = ANY(%s)", [ids])}
    lost = len({row[0] for row in bad} & set(ids)) + len(set(ids) - found)
    if kind == "work":
        twice = stack.sql(
            "SELECT count(*) FROM (SELECT task_id FROM bench_runs WHERE kind = 'done' AND task_id = ANY(%s) "
            "GROUP BY task_id HAVING count(*) > 1) AS doubled",
            [ids],
        )
    else:
        twice = stack.sql(
            "SELECT count(*) FROM (SELECT e.task_id FROM task_events e JOIN tasks t ON t.id = e.task_id "
            "WHERE (t.id = ANY(%s) OR t.parent_id = ANY(%s)) AND e.kind = 'state' AND e.state = 'SUCCESS' "
            "GROUP BY e.task_id HAVING count(*) > 1) AS doubled",
            [ids, ids],
        )
    return lost, int(twice[0][0])


def _report(stack: Stack, load: Load, rate: float) -> list[dict[str, Any]]:
    done_at = sorted(
        row[0].timestamp()
        for row in stack.sql("SELECT finished_at FROM tasks WHERE finished_at IS NOT NULL AND parent_id IS NULL")
    )
    by_fault: dict[str, list[Phase]] = defaultdict(list)
    for phase in load.phases:
        by_fault[phase.fault].append(phase)
    rows = []
    for fault, phases in by_fault.items():
        accepted = [item for phase in phases for item in phase.accepted]
        ids = [task_id for _, task_id in accepted]
        lost: dict[str, int] = {}
        twice: dict[str, int] = {}
        for kind in KINDS:
            lost[kind], twice[kind] = outcomes(stack, kind, [t for k, t in accepted if k == kind])
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
                "accepted": dict(Counter(kind for kind, _ in accepted)),
                "lost": lost,
                "twice": twice,
                "states": states,
                "attempts_over_1": int(
                    stack.sql(
                        "SELECT count(*) FROM tasks WHERE (id = ANY(%s) OR parent_id = ANY(%s)) AND attempts > 1",
                        [ids, ids],
                    )[0][0]
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


def _per_kind(counts: dict[str, int]) -> str:
    return " / ".join(str(counts.get(kind, 0)) for kind in KINDS)


def markdown(report: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    kinds = " / ".join(KINDS)
    lines = [
        "# Faults under load (issue 17)",
        "",
        f"`python -m bench faults`, {meta['started']}: HTTP submissions at {meta['rate_per_s']}/s of a mix "
        f"(in every ten: 8 `bench_work`, two transactional steps around a {meta['task_seconds']} s sleep; "
        "1 `checkpointed`, the article's six-stage checkpointed workflow; 1 `chord`, three agents in parallel "
        "then an aggregate; the agents on the offline stand-in model), each fault injected "
        f"{meta['rounds']} times, 12 s of load after each. Private PostgreSQL and RabbitMQ (the machine's are "
        "never touched); `interlock api` and `interlock worker` as shipped (lease "
        f"{LEASE_SECONDS} s for the freeze to lapse within the run).",
        "",
        "Lost: accepted (2xx) and not in SUCCESS after the drain (a chord: it or any of its children). "
        "Twice: `bench_work`'s last transactional step committed more than once (its marker rows); an agent "
        "task or chord child that recorded SUCCESS more than once. "
        "Recovery: from the fault's end until completions per second are back to 80 % of the submission rate. "
        "Tasks are counted under the fault during which they were submitted (a task submitted just before "
        "an injection and restarted by it shows in the row above).",
        "",
        f"| fault | how | answers | accepted ({kinds}) | lost ({kinds}) | twice ({kinds}) "
        "| restarted (attempts > 1) | recovery (max) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in report:
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(row["answers"].items()))
        recovery = "-" if row["recovery_max_s"] is None else f"{row['recovery_max_s']} s"
        if row["not_recovered"]:
            recovery += f" ({row['not_recovered']} not within 120 s)"
        lines.append(
            f"| {row['fault']} | {row['how']} | {answers} | {_per_kind(row['accepted'])} | {_per_kind(row['lost'])} "
            f"| {_per_kind(row['twice'])} | {row['attempts_over_1']} | {recovery} |"
        )
    recoveries = [r for row in report for r in row["recovery_s"]]
    if recoveries:
        lines += ["", f"Recovery over all injections: median {statistics.median(recoveries):.1f} s."]
    return "\n".join(lines) + "\n"
