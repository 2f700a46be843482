"""The six workloads of issue 6. Each returns ``{"systems": {name: {...}}, "notes": [...]}``."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import requests

from interlock.settings import Settings
from testkit.processes import free_port, wait_http
from testkit.waiting import WaitTimeout, wait_until

from .observed import InProcessBatches, worker_batches
from .services import Proc
from .systems import Lab, RssSampler, new_id, submit_many


@dataclass(frozen=True)
class Sizes:
    reps: int
    w1_tasks: int
    w2_tasks: dict[str, int]
    w3_seconds: int
    w3_connections: int
    w4_steps: int
    w5_backlog: int
    w6_tasks: int
    w6_task_seconds: float
    w7_rows: int


QUICK = Sizes(
    reps=3,
    w1_tasks=1000,
    w2_tasks={"interlock": 256, "interlock-t128": 256, "celery": 16, "celery-threads": 128, "dramatiq": 48},
    w3_seconds=5,
    w3_connections=32,
    w4_steps=300,
    w5_backlog=5000,
    w6_tasks=60,
    w6_task_seconds=1.0,
    w7_rows=1_000_000,
)
FULL = Sizes(
    reps=3,
    w1_tasks=5000,
    w2_tasks={"interlock": 1000, "interlock-t128": 1000, "celery": 100, "celery-threads": 1000, "dramatiq": 1000},
    w3_seconds=20,
    w3_connections=32,
    w4_steps=2000,
    w5_backlog=100_000,
    w6_tasks=500,
    w6_task_seconds=1.0,
    w7_rows=1_000_000,
)


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "reps": [round(v, 3) for v in values],
        "median": round(statistics.median(values), 3) if values else None,
        "min": round(min(values), 3) if values else None,
        "max": round(max(values), 3) if values else None,
    }


# -- counting completions -----------------------------------------------------------------------


def interlock_done(lab: Lab) -> int:
    return int(lab.scratch.scalar("SELECT count(*) FROM tasks WHERE state = 'SUCCESS'"))


def celery_done(lab: Lab) -> int:
    try:
        return int(lab.scratch.scalar("SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'"))
    except Exception:  # the table appears with the first result
        return 0


def dramatiq_counted(lab: Lab) -> int:
    return int(lab.scratch.scalar("SELECT coalesce(sum(n), 0) FROM bench_counts"))


def runs_done(lab: Lab, system: str) -> int:
    return int(lab.scratch.scalar("SELECT count(*) FROM bench_runs WHERE system = %s AND kind = 'done'", system))


def _cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def _cpu_by_pid(procs: list[psutil.Process]) -> dict[int, float]:
    return {proc.pid: _cpu_seconds([proc]) for proc in procs if proc.is_running()}


def _cpu_since(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU spent between two snapshots by the processes alive at both (one that exited meanwhile would
    otherwise count negative)."""
    return sum(after[pid] - before[pid] for pid in after.keys() & before.keys())


def _service_processes() -> dict[str, list[psutil.Process]]:
    """PostgreSQL's and RabbitMQ's processes (shared by every system: their CPU per task is approximate,
    backends that start or end during a run are missed)."""
    found: dict[str, list[psutil.Process]] = {"postgres": [], "rabbitmq": []}
    for proc in psutil.process_iter(["name"]):
        name = proc.info["name"] or ""
        if name == "postgres":
            found["postgres"].append(proc)
        elif name.startswith("beam"):
            found["rabbitmq"].append(proc)
    return found


def drain_rate(
    submit: Any, done: Any, n: int, *, threads: int, timeout: float, worker: Proc | None = None
) -> dict[str, float]:
    """Submit ``n`` tasks while workers run; the time until all are done gives tasks/s end to end.

    Also the CPU the worker processes and this (submitting) process spent per task, in ms.
    """
    base = done()
    workers = worker.tree() if worker is not None else []
    me = psutil.Process()
    services = _service_processes()
    cpu_before = _cpu_seconds(workers), _cpu_seconds([me])
    service_before = {name: _cpu_by_pid(procs) for name, procs in services.items()}
    psutil.cpu_percent(None)
    started = time.monotonic()
    submit_many(submit, n, threads=threads)
    submitted = time.monotonic()
    wait_until(lambda: done() >= base + n, timeout=timeout, interval=0.05, what=f"{n} completions")
    finished = time.monotonic()
    cpu = psutil.cpu_percent(None)
    worker_ms = 1000 * (_cpu_seconds(workers) - cpu_before[0]) / n
    submitter_ms = 1000 * (_cpu_seconds([me]) - cpu_before[1]) / n
    service_ms = {
        f"{name}_cpu_ms": 1000 * _cpu_since(service_before[name], _cpu_by_pid(procs)) / n
        for name, procs in services.items()
    }
    return {
        **service_ms,
        "rate": n / (finished - started),
        "wall": finished - started,
        "submit_s": submitted - started,
        "cpu": cpu,
        "worker_cpu_ms": worker_ms,
        "submitter_cpu_ms": submitter_ms,
    }


def warm_up(submit: Any, done: Any, *, timeout: float = 90.0) -> None:
    """One task through the system: its workers are up and connected."""
    base = done()
    submit(0)
    wait_until(lambda: done() >= base + 1, timeout=timeout, interval=0.1, what="the warm-up task")


def _measure(
    name: str,
    submit: Any,
    done: Any,
    n: int,
    reps: int,
    *,
    threads: int,
    timeout: float,
    worker: Proc | None = None,
) -> dict[str, Any]:
    warm_up(submit, done)
    runs = [drain_rate(submit, done, n, threads=threads, timeout=timeout, worker=worker) for _ in range(reps)]
    result = summary([r["rate"] for r in runs])
    result["wall_s"] = summary([r["wall"] for r in runs])
    result["submit_s"] = summary([r["submit_s"] for r in runs])
    result["machine_cpu_pct"] = summary([r["cpu"] for r in runs])
    result["worker_cpu_ms_per_task"] = summary([r["worker_cpu_ms"] for r in runs])
    result["submitter_cpu_ms_per_task"] = summary([r["submitter_cpu_ms"] for r in runs])
    result["postgres_cpu_ms_per_task"] = summary([r["postgres_cpu_ms"] for r in runs])
    result["rabbitmq_cpu_ms_per_task"] = summary([r["rabbitmq_cpu_ms"] for r in runs])
    result["tasks"] = n
    print(f"  {name:<22} {result['median']:>9.1f} tasks/s  (range {result['min']:.1f}-{result['max']:.1f})")
    return result


# -- W1 ------------------------------------------------------------------------------------------


def w1_noop(lab: Lab, sizes: Sizes) -> dict[str, Any]:
    n, reps, out = sizes.w1_tasks, sizes.reps, {}
    timeout = 30 + n / 20

    client = lab.interlock()
    threads = Settings.from_env({}).worker_threads
    # The second run is a diagnostic, not as shipped: the same workers with commits that do not wait
    # for the WAL flush (libpq's PGOPTIONS, for these processes only), to show how much is commit latency.
    variants = (
        ("interlock", f"interlock (2x{threads})", {}),
        ("interlock-async-commit", "interlock (diag: async commit)", {"PGOPTIONS": "-c synchronous_commit=off"}),
    )
    submitter_batches = InProcessBatches()
    for name, label, extra in variants:
        metrics_port = free_port()
        worker = lab.interlock_worker(f"w1-{name}-worker", INTERLOCK_WORKER_METRICS_PORT=str(metrics_port), **extra)
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        wait_http(metrics_url, proc=worker)
        before = worker_batches(metrics_url), submitter_batches.snapshot(), client.publish_delays()
        out[name] = _measure(
            label,
            lambda i: client.submit("bench_noop", {"query": "noop"}),
            lambda: interlock_done(lab),
            n,
            reps,
            threads=8,
            timeout=timeout,
            worker=worker,
        )
        out[name]["observed"] = {
            "worker_batch_means": (worker_batches(metrics_url) - before[0]).means(),
            "submitter_batch_means": (submitter_batches.snapshot() - before[1]).means(),
            "publish_delay": (client.publish_delays() - before[2]).summary(),
        }
        lab.stop(worker)

    celery = lab.celery_app()
    celery.create_result_tables()
    for pool, name in (("prefork", "celery"), ("threads", "celery-threads")):
        worker = lab.celery_worker(f"w1-{name}-worker", pool)
        out[name] = _measure(
            f"{name} ({'-c 4' if pool == 'prefork' else '-P threads -c 64'})",
            lambda i: celery.noop.delay(),
            lambda: celery_done(lab),
            n,
            reps,
            threads=1,
            timeout=timeout,
            worker=worker,
        )
        lab.stop(worker)

    plain = lab.dramatiq_module()
    worker = lab.dramatiq_worker("w1-dramatiq-worker")
    out["dramatiq"] = _measure(
        "dramatiq (2x8, counter)",
        lambda i: plain.noop.send(),
        lambda: dramatiq_counted(lab),
        n,
        reps,
        threads=1,
        timeout=timeout,
        worker=worker,
    )
    out["dramatiq-durable"] = _measure(
        "dramatiq (2x8, 1 INSERT)",
        lambda i: plain.noop_durable.send(new_id()),
        lambda: runs_done(lab, "dramatiq"),
        n,
        reps,
        threads=1,
        timeout=timeout,
        worker=worker,
    )
    lab.stop(worker)
    return {
        "systems": out,
        "unit": "tasks/s",
        "notes": [
            f"{n} no-op tasks per repetition, submitted from the benchmark process while the workers run; "
            "the clock stops when the last final state is readable in PostgreSQL.",
            "Interlock submits with its own path (row committed, then publish confirmed) from 8 threads; "
            "Celery and Dramatiq publish from one thread (no confirms: their publish is cheaper).",
            "Celery: result in PostgreSQL (database backend). dramatiq: completions counted in memory and "
            "flushed every 0.1 s (not durable: the ceiling); dramatiq-durable: one INSERT per task.",
            "interlock-async-commit is a diagnostic, not as shipped: the worker processes' sessions run with "
            "synchronous_commit=off (PGOPTIONS); the submitting side still commits synchronously.",
        ],
    }


# -- W2 ------------------------------------------------------------------------------------------


def w2_agents(lab: Lab, sizes: Sizes) -> dict[str, Any]:
    reps, out = sizes.reps, {}

    def run(name: str, submit: Any, done: Any, concurrency: int, worker: Proc | None = None) -> None:
        n = sizes.w2_tasks[name]
        floor = 2.0 * -(-n // concurrency)
        result = _measure(name, submit, done, n, reps, threads=8, timeout=60 + 2.5 * n, worker=worker)
        result["concurrency"] = concurrency
        result["floor_s"] = floor
        out[name] = result

    client = lab.interlock()
    query = {"query": "Explain durable execution"}
    for name, threads in (("interlock", None), ("interlock-t128", 128)):
        extra = {"INTERLOCK_WORKER_THREADS": str(threads)} if threads else {}
        worker = lab.interlock_worker(f"w2-{name}-worker", **extra)
        # Each process holds INTERLOCK_AGENT_SLOTS tasks (issue 16), or its threads if they are more.
        in_flight = 2 * max(threads or 0, Settings.from_env({}).agent_slots)
        run(name, lambda i: client.submit("agent", query), lambda: interlock_done(lab), in_flight, worker)
        lab.stop(worker)

    celery = lab.celery_app()
    celery.create_result_tables()
    for pool, name, concurrency in (("prefork", "celery", 4), ("threads", "celery-threads", 64)):
        worker = lab.celery_worker(f"w2-{name}-worker", pool)
        run(
            name,
            lambda i: celery.execute_agent_workflow.delay(query="Explain durable execution", context={}),
            lambda: celery_done(lab),
            concurrency,
            worker,
        )
        lab.stop(worker)

    plain = lab.dramatiq_module()
    worker = lab.dramatiq_worker("w2-dramatiq-worker")
    run(
        "dramatiq",
        lambda i: plain.agent.send(new_id(), "Explain durable execution"),
        lambda: runs_done(lab, "dramatiq"),
        16,
        worker,
    )
    lab.stop(worker)

    target_n = 1000
    for result in out.values():
        result["projected_1000_s"] = round(target_n / result["median"], 1)
    return {
        "systems": out,
        "unit": "tasks/s",
        "notes": [
            "Each task makes two calls to the fake OpenAI server (its own process, 1.0 s latency): 2 s floor per task.",
            "interlock: default settings (INTERLOCK_WORKER_PROCESSES=2 x INTERLOCK_AGENT_SLOTS=256 = 512 tasks "
            "in flight, INTERLOCK_WORKER_THREADS=32 of them per process running up to their first LLM call). "
            "interlock-t128: INTERLOCK_WORKER_THREADS=128 running places per process, the same 256 slots. "
            "Threads share each process's pool of INTERLOCK_DATABASE_POOL_SIZE connections, so more threads "
            "need no more PostgreSQL connections.",
            "worker_cpu_ms_per_task: user+system CPU of the worker processes (psutil) over the tasks of a repetition.",
            "floor_s is ceil(N / concurrency) x 2 s for the tasks of one repetition; "
            "projected_1000_s is 1000 / median rate.",
        ],
    }


# -- W3 ------------------------------------------------------------------------------------------

WRK_SCRIPT = """wrk.method = "POST"
wrk.body = '{"query": "Explain durable execution"}'
wrk.headers["Content-Type"] = "application/json"
"""


def _wrk_script(path: Path, key: str | None) -> Path:
    text = WRK_SCRIPT + (f'wrk.headers["Authorization"] = "Bearer {key}"\n' if key else "")
    path.write_text(text)
    return path


def _wrk(url: str, *, seconds: int, connections: int, script: Path) -> dict[str, Any]:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    text = proc.stdout.read().decode()
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    cpu = usage.ru_utime + usage.ru_stime

    def latency(pct: str) -> float:
        match = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if not match:
            raise RuntimeError(f"wrk output without {pct}%:\n{text}")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    requests_done = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    ok = requests_done - (int(bad.group(1)) if bad else 0)
    return {
        "rps": rps * ok / requests_done if requests_done else 0.0,
        "rps_all_answers": rps,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "requests": requests_done,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else "",
        "generator_cpu_pct": 100 * cpu / seconds,
    }


def _wrk_measured(proc: Proc, url: str, sizes: Sizes, script: Path) -> dict[str, Any]:
    """One wrk repetition, with the CPU the server's processes spent per request answered."""
    servers = proc.tree()
    cpu_before = _cpu_seconds(servers)
    run = _wrk(url + "/agent/execute", seconds=sizes.w3_seconds, connections=sizes.w3_connections, script=script)
    run["server_cpu_ms_per_request"] = 1000 * (_cpu_seconds(servers) - cpu_before) / max(1, run["requests"])
    return run


def w3_http(lab: Lab, sizes: Sizes) -> dict[str, Any]:
    out = {}
    for name in ("interlock", "celery"):
        if name == "interlock":
            proc, url = lab.interlock_api("w3-interlock-api")
            script = _wrk_script(lab.logs / "post-interlock.lua", lab.interlock_api_key())
        else:
            lab.celery_app()
            proc, url = lab.celery_api("w3-celery-api")
            script = _wrk_script(lab.logs / "post-celery.lua", None)
        _wrk(url + "/agent/execute", seconds=2, connections=sizes.w3_connections, script=script)  # warm-up
        before = int(lab.scratch.scalar("SELECT count(*) FROM tasks"))
        runs = [_wrk_measured(proc, url, sizes, script) for _ in range(sizes.reps)]
        result = summary([r["rps"] for r in runs])
        for key in ("p50_ms", "p99_ms", "generator_cpu_pct", "server_cpu_ms_per_request"):
            result[key] = summary([r[key] for r in runs])
        result["non_2xx"] = sum(r["non_2xx"] for r in runs)
        result["socket_errors"] = [r["socket_errors"] for r in runs if r["socket_errors"]]
        if name == "interlock":
            rows = int(lab.scratch.scalar("SELECT count(*) FROM tasks")) - before
            result["rows_committed"] = rows
            result["requests_answered"] = sum(r["requests"] for r in runs)
        lab.stop(proc)
        lab.scratch.purge_queues(name)
        out[name] = result
        print(
            f"  {name:<22} {result['median']:>9.1f} req/s  p50 {result['p50_ms']['median']:.1f} ms"
            f"  p99 {result['p99_ms']['median']:.1f} ms  (wrk CPU {result['generator_cpu_pct']['median']:.0f}%)"
        )
    return {
        "systems": out,
        "unit": "requests/s",
        "notes": [
            f"wrk -t2 -c{sizes.w3_connections} -d{sizes.w3_seconds}s per repetition (after a 2 s warm-up), "
            "POST /agent/execute {query}; no workers run, so messages stay queued.",
            "interlock: `interlock api` as shipped (gunicorn gthread, INTERLOCK_API_WORKERS=2 x "
            "INTERLOCK_API_THREADS=32); each 202 follows a committed row and its committed outbox message "
            "(published with confirms, in batches, by the process's relay).",
            "celery: the article's FastAPI endpoint under uvicorn, one process as in its compose file; "
            "`.delay()` publishes without confirms and writes nothing to the database.",
            "generator_cpu_pct: wrk's own CPU (user+sys) over the run; 100% = one of the 2 cores.",
            "plain Dramatiq has no HTTP API: not measured.",
            "requests/s counts 2xx answers only (non-2xx are listed apart).",
            f"interlock auth: {lab.auth_note}",
        ],
    }


# -- W4 ------------------------------------------------------------------------------------------


def w4_step(lab: Lab, sizes: Sizes) -> dict[str, Any]:
    from actors.context import TaskContext
    from models.task_transitions import create_task

    client = lab.interlock()
    runtime = client.runtime
    n = sizes.w4_steps

    def payload(i: int) -> dict[str, Any]:
        return {"i": i, "text": "x" * 64}

    step_p50, step_p99, plain_p50 = [], [], []
    for rep in range(sizes.reps):
        task_id = new_id()
        with runtime.sessions.begin() as session:
            create_task(session, task_id=task_id, workflow="bench_noop", actor="bench_noop", queue="default", input={})
        ctx = TaskContext(task_id=task_id, input={}, attempt=1, runtime=runtime, soft_deadline=time.monotonic() + 3600)
        ctx.completed_steps()
        durations = []
        for i in range(n):
            started = time.perf_counter()
            ctx.step(f"step-{i}", payload, i)
            durations.append((time.perf_counter() - started) * 1000)
        plain = []
        for i in range(n):
            started = time.perf_counter()
            payload(i)
            plain.append((time.perf_counter() - started) * 1000)
        durations.sort()
        step_p50.append(statistics.median(durations))
        step_p99.append(durations[int(0.99 * (n - 1))])
        plain_p50.append(statistics.median(plain))
        del rep

    out: dict[str, Any] = {"interlock": summary(step_p50)}
    out["interlock"]["p99_ms"] = summary(step_p99)
    out["plain call"] = summary(plain_p50)

    celery = lab.celery_app()
    celery.create_result_tables()
    backend = celery.app.backend
    state_p50 = []
    for _ in range(sizes.reps):
        task_id, durations = new_id(), []
        for i in range(min(n, 500)):
            started = time.perf_counter()
            backend.store_result(task_id, {"step": f"s{i}", "progress": i % 100}, "PROCESSING")
            durations.append((time.perf_counter() - started) * 1000)
        state_p50.append(statistics.median(durations))
    out["celery update_state"] = summary(state_p50)
    print(
        f"  interlock ctx.step p50 {out['interlock']['median']:.3f} ms"
        f" (p99 {out['interlock']['p99_ms']['median']:.3f}); plain call {out['plain call']['median'] * 1000:.2f} us;"
        f" celery update_state {out['celery update_state']['median']:.3f} ms"
    )
    return {
        "systems": out,
        "unit": "ms per step (p50)",
        "notes": [
            f"{n} steps per repetition in this process on PostgreSQL (loopback): each ctx.step runs a small "
            "function and commits its checkpoint; 'plain call' is the same function called directly.",
            "celery update_state: the article's progress write (Celery database backend, store_result), "
            "for scale: it is not a checkpoint (a retry runs the whole task again).",
            "plain Dramatiq has no durable step.",
        ],
    }


# -- W5 ------------------------------------------------------------------------------------------


def _rss_summary(samples: list[dict[str, float]], key: str, warm: int) -> dict[str, float]:
    """RSS at the first sample, once warm (the ``warm``-th sample: processes started and serving), its
    maximum, at the end, and its growth from warm to the end.

    Warm is when a tenth of the backlog has drained, not a share of the samples: in a quick run the
    drain is short and a quarter of the samples still falls in the processes' start (their imports),
    which is not growth.
    """
    values = [s[key] for s in samples if key in s and s[key] > 0]
    if not values:
        return {}
    settle = values[min(len(values) - 1, max(1, warm))]
    return {
        "first_mb": values[0],
        "at_warm_mb": settle,
        "max_mb": max(values),
        "last_mb": values[-1],
        "growth_after_warm_mb": round(values[-1] - settle, 1),
        "samples": len(values),
    }


def _w5_one(lab: Lab, sizes: Sizes, name: str) -> dict[str, Any]:
    n = sizes.w5_backlog
    if name == "interlock":
        client = lab.interlock()
        done = lambda: interlock_done(lab)  # noqa: E731
        base = done()
        started = time.monotonic()
        submit_many(lambda i: client.submit("bench_noop", {"query": "backlog"}, priority=0), n, threads=8)
        queued_s = time.monotonic() - started
        api, url = lab.interlock_api("w5-interlock-api")
        worker = lab.interlock_worker("w5-interlock-worker")

        def high() -> str:
            return client.submit("bench_work", {"query": "urgent", "context": {"sleep": 0}}, priority=9)

    else:
        celery = lab.celery_app()
        celery.create_result_tables()
        done = lambda: celery_done(lab)  # noqa: E731
        base = done()
        started = time.monotonic()
        submit_many(lambda i: celery.noop.delay(), n, threads=1)
        queued_s = time.monotonic() - started
        api, url = lab.celery_api("w5-celery-api")
        worker = lab.celery_worker("w5-celery-worker", "prefork")

        def high() -> str:
            return str(celery.mark_high.delay().id)

    poller_stop = threading.Event()

    def poll_api() -> None:
        while not poller_stop.wait(0.05):
            with contextlib.suppress(requests.RequestException):
                requests.get(url + "/healthz", timeout=2)

    poller = threading.Thread(target=poll_api, daemon=True)
    poller.start()
    latencies: list[float] = []
    with RssSampler({"worker": worker, "api": api}) as sampler:
        wait_until(lambda: done() >= base + 1 + n // 10, timeout=120 + n / 50, what="the backlog to start draining")
        warm = len(sampler.samples)
        for _ in range(sizes.reps):
            sent = time.time()
            task_id = high()
            wait_until(
                lambda task_id=task_id: (
                    lab.scratch.scalar(  # type: ignore[misc]
                        "SELECT count(*) FROM bench_runs WHERE task_id = %s", task_id
                    )
                    > 0
                ),
                timeout=120,
                what="the high-priority task to start",
            )
            at = lab.scratch.scalar("SELECT extract(epoch FROM at) FROM bench_runs WHERE task_id = %s", task_id)
            latencies.append(float(at) - sent)
            time.sleep(0.5)
        backlog_left = max(0, n - (done() - base))
        wait_until(
            lambda: done() >= base + n + sizes.reps, timeout=120 + n / 20, interval=0.2, what="the backlog to drain"
        )
        drained_s = sampler.samples[-1]["t"] if sampler.samples else 0
    poller_stop.set()
    poller.join(timeout=5)
    result = summary([lat * 1000 for lat in latencies])
    result.update(
        {
            "backlog": n,
            "queued_in_s": round(queued_s, 1),
            "backlog_left_at_first_probe": backlog_left,
            "drained_in_s": drained_s,
            "worker_rss": _rss_summary(sampler.samples, "worker", warm),
            "api_rss": _rss_summary(sampler.samples, "api", warm),
        }
    )
    (lab.logs / f"w5-{name}-rss.json").write_text(json.dumps(sampler.samples))
    lab.stop(worker)
    lab.stop(api)
    print(
        f"  {name:<22} high-priority start {result['median']:.0f} ms"
        f" (range {result['min']:.0f}-{result['max']:.0f}); worker RSS {result['worker_rss']}"
    )
    return result


def w5_backlog(lab: Lab, sizes: Sizes) -> dict[str, Any]:
    n = sizes.w5_backlog
    out = {name: _w5_one(lab, sizes, name) for name in ("interlock", "celery")}
    return {
        "systems": out,
        "unit": "ms from submission to start of a high-priority task (median)",
        "notes": [
            f"{n} no-op tasks queued before any worker starts; then API and workers start, and once 10% has "
            "drained one high-priority task is submitted (x reps, 0.5 s apart) and its body's start is timed.",
            "interlock: priority 9 on the same queue (x-max-priority); celery: the article's route to its "
            "'high_priority' queue (no broker priorities in its config).",
            "RSS summed over each process tree (supervisor + children / celery main + pool), sampled every "
            "0.5 s; the API answers /healthz at ~20 req/s meanwhile. Full series in logs/w5-*-rss.json.",
            "plain Dramatiq: not measured.",
        ],
    }


# -- W6 ------------------------------------------------------------------------------------------


def _kill_children(proc: Proc, kills: int, interval: float, log: list[dict[str, Any]]) -> None:
    for _ in range(kills):
        time.sleep(interval)
        children = []
        for child in proc.tree()[1:]:
            try:
                if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline()):
                    children.append(child)
            except psutil.Error:
                pass
        if not children:
            log.append({"at": time.monotonic(), "pid": None})
            continue
        victim = random.choice(children)
        try:
            os.kill(victim.pid, signal.SIGKILL)
            log.append({"at": time.monotonic(), "pid": victim.pid})
        except ProcessLookupError:
            log.append({"at": time.monotonic(), "pid": None})


def _w6_one(lab: Lab, sizes: Sizes, name: str, concurrency: int) -> dict[str, Any]:
    n, seconds = sizes.w6_tasks, sizes.w6_task_seconds
    if name == "interlock":
        client = lab.interlock()
        worker = lab.interlock_worker("w6-interlock-worker")
        warm_up(lambda i: client.submit("bench_noop", {"query": "warm"}), lambda: interlock_done(lab))
        ids = [new_id() for _ in range(n)]

        def submit(i: int) -> object:
            from actors.submit import submit as interlock_submit

            return interlock_submit(
                client.runtime.sessions,
                client.broker,
                client.catalogue,
                workflow="bench_work",
                input={"query": "crash", "context": {"sleep": seconds}},
                priority=4,
                task_id=ids[i],
            )

    else:
        celery = lab.celery_app()
        celery.create_result_tables()
        worker = lab.celery_worker("w6-celery-worker", "prefork")
        warm_up(lambda i: celery.noop.delay(), lambda: celery_done(lab))
        ids = [new_id() for _ in range(n)]

        def submit(i: int) -> object:
            return celery.work.apply_async(args=[seconds], task_id=ids[i])

    expected = n * seconds / concurrency
    interval = max(0.5, expected / 6)
    kills: list[dict[str, Any]] = []
    started = time.monotonic()
    submit_many(submit, n, threads=4)
    killer = threading.Thread(target=_kill_children, args=(worker, 5, interval, kills))
    killer.start()
    killer.join()

    def finished() -> int:
        return int(
            lab.scratch.scalar(
                "SELECT count(DISTINCT task_id) FROM bench_runs WHERE kind = 'done' AND task_id = ANY(%s)", ids
            )
        )

    # A dead process's leases are released by its supervisor at once; the 30 s lease is the fallback.
    deadline = 60 + expected * 2 + (60 if name == "interlock" else 0)
    with contextlib.suppress(WaitTimeout):
        wait_until(lambda: finished() >= n, timeout=deadline, interval=0.25, what="all tasks")
    wall = time.monotonic() - started
    done_once = finished()
    twice = int(
        lab.scratch.scalar(
            "SELECT count(*) FROM (SELECT task_id FROM bench_runs WHERE kind = 'done' AND task_id = ANY(%s) "
            "GROUP BY task_id HAVING count(*) > 1) AS t",
            ids,
        )
    )
    if name == "interlock":
        # The start marker is a transactional step, written once however often the body is
        # entered: count the starts Interlock itself recorded (every claim of the task).
        restarted = int(lab.scratch.scalar("SELECT count(*) FROM tasks WHERE id = ANY(%s) AND attempts > 1", ids))
    else:
        restarted = int(
            lab.scratch.scalar(
                "SELECT count(*) FROM (SELECT task_id FROM bench_runs WHERE kind = 'start' AND task_id = ANY(%s) "
                "GROUP BY task_id HAVING count(*) > 1) AS t",
                ids,
            )
        )
    result: dict[str, Any] = {
        "tasks": n,
        "lost": n - done_once,
        "completed_twice": twice,
        "started_more_than_once": restarted,
        "kills": len([k for k in kills if k["pid"]]),
        "kill_interval_s": round(interval, 2),
        "wall_s": round(wall, 1),
    }
    if name == "interlock":
        result["final_state_not_success"] = int(
            lab.scratch.scalar("SELECT count(*) FROM tasks WHERE id = ANY(%s) AND state <> 'SUCCESS'", ids)
        )
    else:
        result["final_state_not_success"] = n - int(
            lab.scratch.scalar(
                "SELECT count(*) FROM celery_taskmeta WHERE task_id = ANY(%s) AND status = 'SUCCESS'", ids
            )
        )
    lab.stop(worker)
    lab.scratch.purge_queues(name)
    print(f"  {name:<22} {result}")
    return result


def w6_crash(lab: Lab, sizes: Sizes) -> dict[str, Any]:
    n, seconds = sizes.w6_tasks, sizes.w6_task_seconds
    out = {name: _w6_one(lab, sizes, name, concurrency) for name, concurrency in (("interlock", 16), ("celery", 4))}
    return {
        "systems": out,
        "unit": "tasks",
        "notes": [
            f"{n} tasks of {seconds:g} s each; five SIGKILLs of a random worker process (interlock: a child of the "
            "supervisor; celery: a prefork pool child), spaced by about a sixth of the expected run time.",
            "lost: tasks whose body never recorded completion by the deadline. completed_twice: tasks with more "
            "than one completion row. celery's body writes its rows itself, so a re-run body writes another; "
            "interlock's body writes them with ctx.transactional_step (the row commits with the step's "
            "checkpoint), the documented way to get an exactly-once database side effect, so it counts done "
            "steps committed twice.",
            "started_more_than_once: task bodies entered more than once, e.g. re-run after their process was "
            "killed (interlock: tasks.attempts > 1, every claim counted, also a run killed before its start "
            "step committed; celery: more than one start row). A re-entered body re-runs its plain code (the "
            "sleep), not its completed steps.",
            "One repetition per system (a count, not a timing).",
        ],
    }


# -- W7 ------------------------------------------------------------------------------------------

#: A month of finished history: tasks of two tenants (one is the benchmark key's), three events each.
W7_FILL = """
    WITH filled AS (
        INSERT INTO tasks (id, workflow, actor, queue, priority, state, progress, current_step, input, result,
                           attempts, tenant, wake_pending, created_at, started_at, finished_at, updated_at)
        SELECT md5('w7-' || g)::uuid::text, 'bench_noop', 'bench_noop', 'default', 4, 'SUCCESS', 100, 'done',
               '{"query": "noop"}'::json, '{"answer": "ok"}'::json, 1,
               CASE WHEN g %% 2 = 0 THEN 'bench' ELSE 'system' END, false,
               at, at, at + interval '1 second', at + interval '1 second'
        FROM generate_series(1, %(rows)s) AS g,
             LATERAL (SELECT now() - interval '30 days' + g * (interval '30 days' / %(rows)s) AS at) AS t
        RETURNING id, created_at
    )
    INSERT INTO task_events (task_id, kind, state, progress, step, data, created_at)
    SELECT filled.id, 'state', s.state, s.progress, NULL, NULL, filled.created_at
    FROM filled CROSS JOIN (VALUES ('PENDING', 0), ('PROCESSING', 0), ('SUCCESS', 100)) AS s(state, progress)
"""


def _w7_round(lab: Lab, sizes: Sizes, label: str) -> dict[str, Any]:
    """W1 and W3 for Interlock alone, on the tables as they are now."""
    client = lab.interlock()
    worker = lab.interlock_worker(f"w7-{label}-worker")
    w1 = _measure(
        f"W1 {label}",
        lambda i: client.submit("bench_noop", {"query": "noop"}),
        lambda: interlock_done(lab),
        sizes.w1_tasks,
        sizes.reps,
        threads=8,
        timeout=30 + sizes.w1_tasks / 20,
        worker=worker,
    )
    lab.stop(worker)
    proc, url = lab.interlock_api(f"w7-{label}-api")
    script = _wrk_script(lab.logs / "post-interlock.lua", lab.interlock_api_key())
    _wrk(url + "/agent/execute", seconds=2, connections=sizes.w3_connections, script=script)  # warm-up
    runs = [_wrk_measured(proc, url, sizes, script) for _ in range(sizes.reps)]
    lab.stop(proc)
    lab.scratch.purge_queues("interlock")
    w3 = summary([r["rps"] for r in runs])
    w3["p99_ms"] = summary([r["p99_ms"] for r in runs])
    print(f"  W3 {label:<19} {w3['median']:>9.1f} req/s  p99 {w3['p99_ms']['median']:.1f} ms")
    return {"W1": w1, "W3": w3}


def w7_large_tables(lab: Lab, sizes: Sizes) -> dict[str, Any]:
    """W1 and W3 on empty tables, then again with ``w7_rows`` finished tasks (and their events) in them."""
    lab.scratch.execute("TRUNCATE tasks, task_events CASCADE")
    empty = _w7_round(lab, sizes, "empty")
    began = time.monotonic()
    lab.scratch.execute(W7_FILL, {"rows": sizes.w7_rows})
    lab.scratch.execute("VACUUM ANALYZE tasks, task_events")
    fill_s = time.monotonic() - began
    print(f"  filled {sizes.w7_rows:,} finished tasks and {3 * sizes.w7_rows:,} events in {fill_s:.0f} s")
    large = _w7_round(lab, sizes, "large")
    out: dict[str, Any] = {}
    for workload in ("W1", "W3"):
        for label, data in (("empty", empty), ("large", large)):
            out[f"interlock-{workload.lower()}-{label}"] = data[workload]
    return {
        "systems": out,
        "unit": "tasks/s (W1), requests/s (W3)",
        "ratios": {
            workload: round(large[workload]["median"] / empty[workload]["median"], 2) for workload in ("W1", "W3")
        },
        "notes": [
            f"Interlock's W1 ({sizes.w1_tasks} no-op tasks) and W3 (wrk, {sizes.w3_seconds} s) on emptied tasks and "
            f"task_events tables, then again after {sizes.w7_rows:,} finished tasks (half of them the benchmark "
            f"tenant's) and {3 * sizes.w7_rows:,} events spread over 30 days were inserted and analyzed "
            f"({fill_s:.0f} s).",
            "ratios: large / empty medians (target >= 0.8).",
        ],
    }


WORKLOADS = {
    "W1": w1_noop,
    "W2": w2_agents,
    "W3": w3_http,
    "W4": w4_step,
    "W5": w5_backlog,
    "W6": w6_crash,
    "W7": w7_large_tables,
}
