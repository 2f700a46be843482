"""Targets of issue 16, the printed table, and the Markdown report."""

from __future__ import annotations

import platform
import subprocess
from typing import Any


def _get(results: dict[str, Any], *path: str) -> Any:
    value: Any = results
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _short(value: float, wanted: float) -> str:
    return "" if value >= wanted else f"{wanted / value:.2f}x short" if value else "nothing measured"


def _ratio(a: Any, b: Any) -> float | None:
    return round(a / b, 2) if isinstance(a, int | float) and isinstance(b, int | float) and b else None


def ratios(results: dict[str, Any]) -> list[tuple[str, float | None]]:
    """Same-run ratios of medians: Interlock / the article's Celery, Interlock / plain Dramatiq."""
    rows: list[tuple[str, float | None]] = []
    w1 = lambda s: _get(results, "W1", "systems", s, "median")  # noqa: E731
    rows += [
        ("W1 interlock / celery (-c 4)", _ratio(w1("interlock"), w1("celery"))),
        ("W1 interlock / celery-threads", _ratio(w1("interlock"), w1("celery-threads"))),
        ("W1 interlock / dramatiq (counter)", _ratio(w1("interlock"), w1("dramatiq"))),
        ("W1 interlock / dramatiq-durable", _ratio(w1("interlock"), w1("dramatiq-durable"))),
    ]
    w2 = lambda s: _get(results, "W2", "systems", s, "median")  # noqa: E731
    rows += [
        ("W2 interlock / celery (-c 4)", _ratio(w2("interlock"), w2("celery"))),
        ("W2 interlock (defaults, 2x32) / dramatiq (2x8)", _ratio(w2("interlock"), w2("dramatiq"))),
        ("W2 interlock-t128 / celery-threads", _ratio(w2("interlock-t128"), w2("celery-threads"))),
    ]
    w3 = lambda s: _get(results, "W3", "systems", s, "median")  # noqa: E731
    rows.append(("W3 interlock / celery (req/s)", _ratio(w3("interlock"), w3("celery"))))
    for workload, value in (_get(results, "W7", "ratios") or {}).items():
        rows.append((f"W7 {workload} with 1M finished tasks / empty tables", value))
    return [(name, value) for name, value in rows if value is not None]


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 16 (and issue 6's W4-W6) with the measured value, met or not, and by how much."""
    rows: list[dict[str, Any]] = []

    def add(name: str, target: str, value: Any, met: bool | None, gap: str) -> None:
        rows.append({"target": name, "wanted": target, "measured": value, "met": met, "gap": gap})

    def at_least(name: str, wanted: float, value: float | None, shown: str) -> None:
        if value is not None:
            add(name, f">= {wanted:g}x", shown.format(value), value >= wanted, _short(value, wanted))

    def at_most(name: str, wanted: float, value: float | None, unit: str) -> None:
        if value is not None:
            met = value <= wanted
            add(name, f"<= {wanted:g} {unit}", f"{value:.2f} {unit}", met, "" if met else f"{value / wanted:.2f}x over")

    w1 = lambda s: _get(results, "W1", "systems", s, "median")  # noqa: E731
    at_least("W1 vs the article's Celery", 2, _ratio(w1("interlock"), w1("celery")), "{:.2f}x")
    at_least("W1 vs Dramatiq, one INSERT per task", 0.5, _ratio(w1("interlock"), w1("dramatiq-durable")), "{:.2f}x")
    at_most(
        "W1 worker CPU per no-op task",
        1,
        _get(results, "W1", "systems", "interlock", "worker_cpu_ms_per_task", "median"),
        "ms",
    )

    w2 = lambda s: _get(results, "W2", "systems", s, "median")  # noqa: E731
    at_least("W2 defaults vs Celery threads 64", 5, _ratio(w2("interlock"), w2("celery-threads")), "{:.2f}x")
    at_most(
        "W2 worker CPU per agent task",
        15,
        _get(results, "W2", "systems", "interlock", "worker_cpu_ms_per_task", "median"),
        "ms",
    )

    w3 = lambda s, *k: _get(results, "W3", "systems", s, *k)  # noqa: E731
    at_least(
        "W3 vs the article's FastAPI (req/s)", 1.5, _ratio(w3("interlock", "median"), w3("celery", "median")), "{:.2f}x"
    )
    il_p99, ce_p99 = w3("interlock", "p99_ms", "median"), w3("celery", "p99_ms", "median")
    if il_p99 is not None and ce_p99:
        met = il_p99 <= ce_p99
        add(
            "W3 p99 vs the article's FastAPI",
            f"<= {ce_p99:.1f} ms",
            f"{il_p99:.1f} ms",
            met,
            "" if met else f"{il_p99 / ce_p99:.2f}x over",
        )
    at_most("W3 API CPU per submission", 1, w3("interlock", "server_cpu_ms_per_request", "median"), "ms")

    for workload in ("W1", "W3"):
        at_least(
            f"W7 {workload} with 1M finished tasks / empty", 0.8, _get(results, "W7", "ratios", workload), "{:.2f}x"
        )

    w4 = _get(results, "W4", "systems", "interlock")
    if w4:
        p50 = w4["median"]
        add("W4 durable step p50", "<= 2 ms", f"{p50:.2f} ms", p50 <= 2, "" if p50 <= 2 else f"{p50 / 2:.2f}x over")
    w5 = _get(results, "W5", "systems", "interlock")
    if w5:
        lat = w5["median"]
        gap = "" if lat <= 1000 else f"{lat / 1000:.1f}x over"
        add("W5 high-priority start", "<= 1 s", f"{lat:.0f} ms", lat <= 1000, gap)
        growth = _get(w5, "worker_rss", "growth_after_warm_mb")
        base = _get(w5, "worker_rss", "at_warm_mb")
        if growth is not None and base:
            flat = growth <= 0.1 * base
            add(
                "W5 worker RSS flat",
                "growth <= 10% after warm-up (10% drained)",
                f"{growth:+.1f} MB on {base:.0f} MB",
                flat,
                "",
            )
        growth = _get(w5, "api_rss", "growth_after_warm_mb")
        base = _get(w5, "api_rss", "at_warm_mb")
        if growth is not None and base:
            flat = growth <= 0.1 * base
            add(
                "W5 API RSS flat",
                "growth <= 10% after warm-up (10% drained)",
                f"{growth:+.1f} MB on {base:.0f} MB",
                flat,
                "",
            )
    w6 = _get(results, "W6", "systems", "interlock")
    if w6:
        ok = w6["lost"] == 0 and w6["completed_twice"] == 0
        add("W6 crash loss", "0 lost, 0 twice", f"{w6['lost']} lost, {w6['completed_twice']} twice", ok, "")
    return rows


def machine() -> dict[str, str]:
    def run(*args: str) -> str:
        try:
            return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    import psutil

    return {
        "nproc": run("nproc"),
        "memory_gb": f"{psutil.virtual_memory().total / 2**30:.1f}",
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "rabbitmq": run("rabbitmqctl", "-q", "version") or "?",
        "postgresql": run("psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", "SHOW server_version"),
    }


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def table(results: dict[str, Any]) -> str:
    lines = ["| workload | system | median | range (min-max) | unit | detail |", "| --- " * 6 + "|"]
    for workload, data in results.items():
        if not isinstance(data, dict) or "systems" not in data:
            continue
        for system, r in data["systems"].items():
            detail = ""
            if workload == "W1":
                detail = (
                    f"N={r['tasks']}, wall {fmt(r['wall_s']['median'])} s (submitting {fmt(r['submit_s']['median'])}"
                    f" s), machine CPU {r['machine_cpu_pct']['median']:.0f}%"
                )
                if "worker_cpu_ms_per_task" in r:
                    detail += (
                        f", CPU per task: workers {r['worker_cpu_ms_per_task']['median']:.2f} ms,"
                        f" submitter {r['submitter_cpu_ms_per_task']['median']:.2f} ms"
                    )
                if "postgres_cpu_ms_per_task" in r:
                    detail += (
                        f", PostgreSQL {r['postgres_cpu_ms_per_task']['median']:.2f} ms,"
                        f" RabbitMQ {r['rabbitmq_cpu_ms_per_task']['median']:.2f} ms"
                    )
                detail += observed_detail(r.get("observed") or {})
            elif workload == "W2":
                detail = (
                    f"N={r['tasks']}, concurrency {r['concurrency']}, wall {fmt(r['wall_s']['median'])} s "
                    f"(floor {r['floor_s']:.0f} s), 1000 tasks ~{r['projected_1000_s']:.0f} s"
                )
            elif workload == "W3":
                detail = (
                    f"p50 {fmt(r['p50_ms']['median'])} ms, p99 {fmt(r['p99_ms']['median'])} ms "
                    f"({fmt(r['p99_ms']['min'])}-{fmt(r['p99_ms']['max'])}), wrk CPU "
                    f"{r['generator_cpu_pct']['median']:.0f}%, non-2xx {r['non_2xx']}"
                )
                if "server_cpu_ms_per_request" in r:
                    detail += f", server CPU {r['server_cpu_ms_per_request']['median']:.2f} ms/request"
                if "rows_committed" in r:
                    detail += f", rows {r['rows_committed']} / answers {r['requests_answered']}"
            elif workload == "W4" and "p99_ms" in r:
                detail = f"p99 {fmt(r['p99_ms']['median'])} ms"
            elif workload == "W5":
                w, a = r.get("worker_rss", {}), r.get("api_rss", {})
                detail = (
                    f"backlog {r['backlog']} ({r['backlog_left_at_first_probe']} left at 1st probe); worker RSS "
                    f"{w.get('at_warm_mb')}→{w.get('last_mb')} MB (max {w.get('max_mb')}); API RSS "
                    f"{a.get('at_warm_mb')}→{a.get('last_mb')} MB"
                )
            if workload == "W6":
                lines.append(
                    f"| W6 | {system} | {r['lost']} lost, {r['completed_twice']} completed twice | - | tasks of "
                    f"{r['tasks']} | {r['kills']} kills, {r['started_more_than_once']} restarted, "
                    f"{r['final_state_not_success']} final state not SUCCESS, {r['wall_s']} s |"
                )
                continue
            lines.append(
                f"| {workload} | {system} | {fmt(r.get('median'))} | {fmt(r.get('min'))}-{fmt(r.get('max'))} "
                f"| {data['unit']} | {detail} |"
            )
    return "\n".join(lines)


def markdown(results: dict[str, Any], meta: dict[str, Any]) -> str:
    out = [
        "# Benchmark report",
        "",
        f"Mode: `{meta['mode']}` (`python -m bench {' '.join(meta['argv'])}`), {meta['started']}, "
        f"{meta['duration_s']:.0f} s in all.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in meta["machine"].items()),
        "",
        "Medians of the repetitions with their range; all systems measured in the same run, one after "
        "another on the same machine (which other work shares: numbers are noisy, ratios are the point).",
        "",
        "## Results",
        "",
        table(results),
        "",
        "## Ratios (same run, medians)",
        "",
        "| ratio | value | bar |",
        "| --- | --- | --- |",
    ]
    for name, value in ratios(results):
        bar = "#" * max(1, min(60, round((value or 0) * 10)))
        out.append(f"| {name} | {value:.2f}x | `{bar}` |")
    out += ["", "## Targets (issue 16)", "", "| target | wanted | measured | met | gap |", "| --- " * 5 + "|"]
    for row in targets(results):
        met = "-" if row["met"] is None else ("met" if row["met"] else "**not met**")
        out.append(f"| {row['target']} | {row['wanted']} | {row['measured']} | {met} | {row['gap']} |")
    out += ["", "## Notes per workload", ""]
    for workload, data in results.items():
        if isinstance(data, dict) and "notes" in data:
            out.append(f"**{workload}**")
            out += [f"- {note}" for note in data["notes"]]
            out.append("")
        elif isinstance(data, dict) and "error" in data:
            out.append(f"**{workload}** failed: `{data['error']}`")
            out.append("")
    return "\n".join(out)


def observed_detail(observed: dict[str, Any]) -> str:
    """Group-commit batch sizes and the outbox's commit-to-publish delay, as a report's detail."""
    detail = ""
    for side in ("worker", "submitter"):
        means = observed.get(f"{side}_batch_means") or {}
        if means:
            detail += f"; {side} writes per statement: " + ", ".join(f"{k} {v:.1f}" for k, v in means.items())
    delay = observed.get("publish_delay") or {}
    if delay:
        detail += (
            f"; commit to publish: mean {delay['mean_ms']:.0f} ms, {100 * delay['within_250ms']:.0f}% within"
            f" 250 ms, p99 <= {delay['p99_at_most_ms']:.0f} ms"
        )
    return detail
