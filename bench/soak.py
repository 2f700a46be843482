"""A long soak (issue 17, part 4): under a moderate steady load, does anything grow?

``python -m bench soak --minutes N [--rate R]`` runs Interlock on private services (``bench.stack``,
with ``interlock scheduler`` running the retention cleanup), submits ``bench.load``'s mix over HTTP at
``rate`` per second, and every ``interval`` seconds samples: the resident memory of every Interlock
process (the API's master and workers, the worker's supervisor and children, the scheduler),
PostgreSQL's connections to the database, RabbitMQ's connections and channels, the depth of every
queue, the size of every table that grows with tasks, and completions per second. The report
(``SOAK.md``) is the series over time and a verdict on each (``testkit.trends``): flat or growing.
Tables are expected to grow with finished tasks until retention deletes them: they are reported as
bytes per retained task, and their total size is flat only if retention caps it within the run.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from testkit.trends import Trend, trend
from testkit.waiting import WaitTimeout, wait_until

from .faults import outcomes, unfinished
from .load import KINDS, MIX, Load
from .services import Proc
from .stack import Stack

__all__ = ["run_soak"]

TABLES = (
    "tasks",
    "task_events",
    "workflow_checkpoints",
    "scheduled_messages",
    "actor_results",
    "task_calls",
    "idempotency_keys",
    "events",
    "queue_samples",
    "worker_processes",
)


@dataclass(frozen=True)
class Series:
    """How one sampled series is judged: its tolerance (relative) and slack (absolute)."""

    name: str
    unit: str
    tolerance: float = 0.10
    slack: float = 0.0


def _roles(stack: Stack) -> dict[str, list[psutil.Process]]:
    """Interlock's processes by role: a master's tree is [master, *children]."""
    roles: dict[str, list[psutil.Process]] = {}
    for name, proc in (("api", stack.api), ("worker", stack.worker), ("scheduler", stack.scheduler)):
        tree = proc.tree() if isinstance(proc, Proc) else []
        live = []
        for p in tree:
            with contextlib.suppress(psutil.Error):
                if p.status() != psutil.STATUS_ZOMBIE:
                    live.append(p)
        if not live:
            continue
        master, rest = live[0], live[1:]
        if name == "scheduler":
            roles["scheduler"] = live
            continue
        roles[f"{name} master"] = [master]
        roles[f"{name} children"] = rest
    return roles


def _rss_mb(processes: list[psutil.Process]) -> list[float]:
    sizes = []
    for p in processes:
        with contextlib.suppress(psutil.Error):
            sizes.append(p.memory_info().rss / 2**20)
    return sizes


def sample(stack: Stack, since: float) -> dict[str, float]:
    """One sample of every series; ``since`` is the previous sample's time.time() (for completions/s)."""
    now = time.time()
    row: dict[str, float] = {"t": now}
    for role, processes in _roles(stack).items():
        sizes = _rss_mb(processes)
        row[f"rss {role} MB"] = round(sum(sizes), 1)
        if role.endswith("children") and sizes:
            row[f"rss {role} max MB"] = round(max(sizes), 1)
            row[f"{role} count"] = len(sizes)
    row["pg connections"] = stack.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )[0][0]
    row["rabbitmq connections"] = len(stack.rabbit.ctl("list_connections", "name").splitlines())
    row["rabbitmq channels"] = len(stack.rabbit.ctl("list_channels", "pid").splitlines())
    depth = 0
    for line in stack.rabbit.ctl("list_queues", "name", "messages").splitlines():
        with contextlib.suppress(ValueError, IndexError):
            depth += int(line.split()[-1])
    row["queue depth"] = depth
    sizes = stack.sql(
        "SELECT relname, pg_total_relation_size(c.oid) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND relname = ANY(%s)",
        [list(TABLES)],
    )
    for name, size in sizes:
        row[f"size {name} MB"] = round(size / 2**20, 2)
    row["tables MB"] = round(sum(size for _, size in sizes) / 2**20, 2)
    tasks, finished, window = stack.sql(
        "SELECT count(*), count(finished_at), count(*) FILTER (WHERE finished_at >= to_timestamp(%s) "
        "AND finished_at < to_timestamp(%s) AND parent_id IS NULL) FROM tasks",
        [since, now],
    )[0]
    row["tasks retained"] = tasks
    row["tasks finished retained"] = finished
    row["bytes per retained task"] = round(sum(size for _, size in sizes) / max(tasks, 1))
    row["completions/s"] = round(window / max(now - since, 1e-3), 2)
    return row


#: How each series is judged. RSS: 10 % or 10 MB; counts: a little slack; table size: 10 %.
JUDGED = (
    Series("rss api master MB", "MB", slack=10),
    Series("rss api children MB", "MB", slack=10),
    Series("rss api children max MB", "MB", slack=10),
    Series("rss worker master MB", "MB", slack=10),
    Series("rss worker children MB", "MB", slack=10),
    Series("rss worker children max MB", "MB", slack=10),
    Series("rss scheduler MB", "MB", slack=10),
    Series("pg connections", "", slack=2),
    Series("rabbitmq connections", "", slack=1),
    Series("rabbitmq channels", "", slack=2),
    Series("queue depth", "messages", slack=50),
    Series("completions/s", "/s", tolerance=0.20),
    Series("bytes per retained task", "B"),
    Series("tables MB", "MB", slack=1),
    Series("tasks retained", ""),
)


def verdicts(samples: list[dict[str, float]]) -> list[tuple[Series, Trend]]:
    """The verdict on every judged series present in the samples."""
    found = []
    tables = tuple(Series(f"size {table} MB", "MB", slack=0.5) for table in TABLES)
    for series in (*JUDGED, *tables):
        values = [s[series.name] for s in samples if series.name in s]
        if values:
            found.append((series, trend(values, tolerance=series.tolerance, slack=series.slack)))
    return found


def run_soak(out: Path, *, minutes: float, rate: float, interval: float, retention: float) -> int:
    env = {
        "INTERLOCK_TASK_RETENTION": str(retention),
        "INTERLOCK_EVENT_RETENTION": str(retention),
        "INTERLOCK_SCHEDULE_CLEANUP_OLD_EVENTS": "every 60s",
        "INTERLOCK_SCHEDULE_MONITOR_DATA_SOURCES": "off",
    }
    stack = Stack(out, database="soak", env=env)
    load = Load(stack, rate)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    samples: list[dict[str, float]] = []
    meta: dict[str, Any] = {
        "started": started,
        "minutes": minutes,
        "rate_per_s": rate,
        "interval_s": interval,
        "retention_s": retention,
        "mix": MIX,
    }
    try:
        stack.start(scheduler=True)
        load.start()
        t0 = time.time()
        end = t0 + minutes * 60
        last, next_at = t0, t0 + interval
        while next_at <= end:
            time.sleep(max(0.0, next_at - time.time()))  # the sampling period, not a wait for work
            next_at += interval
            row = sample(stack, last)
            last = row["t"]
            row["minute"] = round((row["t"] - t0) / 60, 1)
            row["accepted"] = len(load.accepted())
            samples.append(row)
            print(
                f"  {row['minute']:5.1f} min: completions {row['completions/s']}/s, "
                f"worker children {row.get('rss worker children MB')} MB, pg {row['pg connections']}, "
                f"channels {row['rabbitmq channels']}, depth {row['queue depth']}, tables {row['tables MB']} MB",
                flush=True,
            )
            (out / "soak.json").write_text(json.dumps({"meta": meta, "samples": samples}, indent=2, default=str))
        stopped = time.time()
        load.stop()
        accepted = load.accepted()
        # Only tasks younger than the retention can be checked (older ones may be deleted, by design).
        recent = accepted[len(accepted) - int(min(retention / 2, 600) * rate) :]
        with contextlib.suppress(WaitTimeout):
            wait_until(lambda: unfinished(stack, recent) == 0, timeout=180, interval=1, what="the last tasks")
        checked = {}
        for kind in KINDS:
            ids = [t for k, t in recent if k == kind]
            lost, twice = outcomes(stack, kind, ids)
            checked[kind] = {"checked": len(ids), "lost": lost, "twice": twice}
        meta["answers"] = dict(load.answers())
        meta["accepted"] = len(accepted)
        meta["checked"] = checked
        meta["load_seconds"] = round(stopped - t0)
    finally:
        load.stop()
        stack.close()
    (out / "soak.json").write_text(json.dumps({"meta": meta, "samples": samples}, indent=2, default=str))
    judged = render(out)
    growing = [s.name for s, t in judged if t.verdict == "growing" and s.name not in ("tables MB", "tasks retained")]
    return 1 if growing else 0


def render(out: Path) -> list[tuple[Series, Trend]]:
    """Judge the samples in ``out/soak.json`` and write ``out/SOAK.md`` (again, after a change to the report)."""
    saved = json.loads((out / "soak.json").read_text())
    judged = verdicts(saved["samples"])
    text = markdown(saved["samples"], judged, saved["meta"])
    (out / "SOAK.md").write_text(text)
    print(text)
    return judged


_COLUMNS = (
    ("minute", "min"),
    ("completions/s", "done/s"),
    ("queue depth", "depth"),
    ("rss api master MB", "API master MB"),
    ("rss api children MB", "API workers MB"),
    ("rss worker master MB", "worker sup. MB"),
    ("rss worker children MB", "worker children MB"),
    ("rss worker children max MB", "largest child MB"),
    ("rss scheduler MB", "scheduler MB"),
    ("pg connections", "PG conns"),
    ("rabbitmq connections", "AMQP conns"),
    ("rabbitmq channels", "channels"),
    ("tasks retained", "tasks kept"),
    ("tables MB", "tables MB"),
    ("bytes per retained task", "B/task"),
)


def markdown(samples: list[dict[str, float]], judged: list[tuple[Series, Trend]], meta: dict[str, Any]) -> str:
    every = max(1, round(300 / meta["interval_s"]))  # one row per 5 minutes
    shown = samples[::every] + ([samples[-1]] if samples and (len(samples) - 1) % every else [])
    lines = [
        "# Soak (issue 17, part 4)",
        "",
        f"`python -m bench soak --minutes {meta['minutes']:g} --rate {meta['rate_per_s']:g}`, {meta['started']}: "
        f"HTTP submissions at {meta['rate_per_s']:g}/s of a mix (in every ten: 8 `bench_work`, a 1 s task "
        "with two transactional steps; 1 `checkpointed`, six checkpointed stages; 1 `chord`, three agents "
        "in parallel then an aggregate; agents on the offline stand-in model) to `interlock api`, run by one "
        "`interlock worker` (its defaults), with `interlock scheduler` running the "
        f"retention cleanup every 60 s (task and event retention {meta['retention_s']:g} s). Private "
        f"PostgreSQL and RabbitMQ; sampled every {meta['interval_s']:g} s on a shared 2-core machine.",
        "",
        f"Submissions answered: {', '.join(f'{k}: {v}' for k, v in sorted(meta.get('answers', {}).items()))}; "
        f"accepted {meta.get('accepted', '?')}.",
    ]
    if meta.get("checked"):
        parts = [
            f"{k}: {v['checked']} checked, {v['lost']} lost, {v['twice']} twice" for k, v in meta["checked"].items()
        ]
        lines += [
            "",
            "The last tasks (younger than the retention) after the drain: " + "; ".join(parts) + ".",
        ]
    lines += ["", "## Verdicts", "", "Second quarter's mean (after warm-up) against the last quarter's.", ""]
    lines += [
        "| series | second quarter | last quarter | change | slope over the second half, per hour | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for series, result in judged:
        change = "-" if result.change in (float("inf"),) else f"{100 * result.change:+.1f} %"
        allowed = f"±{100 * series.tolerance:.0f} %" + (f" or {series.slack:g}" if series.slack else "")
        lines.append(
            f"| {series.name} | {result.baseline:,.2f} | {result.late:,.2f} | {change} | "
            f"{_slope_per_hour(samples, series.name)} | **{result.verdict}** ({allowed}) |"
        )
    lines += ["", "## Over time (one row per 5 minutes; every sample in soak.json)", ""]
    present = [(key, title) for key, title in _COLUMNS if any(key in s for s in samples)]
    lines.append("| " + " | ".join(title for _, title in present) + " |")
    lines.append("| " + " | ".join("---" for _ in present) + " |")
    for s in shown:
        lines.append("| " + " | ".join(_cell(s.get(key)) for key, _ in present) + " |")
    if samples:
        last = samples[-1]
        per_table = [(key[5:-3], last[key]) for key in sorted(last) if key.startswith("size ") and key.endswith(" MB")]
        kept = max(int(last["tasks retained"]), 1)
        lines += [
            "",
            f"At the end, {kept:,} tasks retained (parents and children); per table, with indexes and TOAST:",
            "",
            "| table | MB | bytes per retained task |",
            "| --- | --- | --- |",
        ]
        lines += [f"| {name} | {size:g} | {size * 2**20 / kept:,.0f} |" for name, size in per_table]
        rates = [s["completions/s"] for s in samples]
        lines += ["", f"Completions/s over the run: median {statistics.median(rates):.2f}, min {min(rates):.2f}."]
    return "\n".join(lines) + "\n"


def _slope_per_hour(samples: list[dict[str, float]], name: str) -> str:
    """The least-squares slope of a series over the run's second half (after warm-up and retention's first pass)."""
    points = [(s["minute"], s[name]) for s in samples[len(samples) // 2 :] if name in s]
    if len(points) < 3 or len({m for m, _ in points}) < 2:
        return "-"
    slope = statistics.linear_regression([m for m, _ in points], [v for _, v in points]).slope
    return f"{60 * slope:+,.2f}"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) < 1e6 else f"{value:,.0f}"
    return f"{value:,}"
