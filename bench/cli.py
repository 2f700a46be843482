"""``python -m bench run --quick|--full [--only W1,W2]``, and the faults, soak, profile and agents runs."""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Interlock against the reference article's Celery setup and plain Dramatiq (issue 6), "
        "on the local RabbitMQ (127.0.0.1:5672, management on :15672) and PostgreSQL (127.0.0.1:5432).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the workloads and write a report")
    mode = run.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="small sizes: a few minutes on 2 cores")
    mode.add_argument("--full", action="store_true", help="the sizes issue 6 asks for (W5: 100,000 tasks)")
    run.add_argument("--only", default="", help="comma-separated workloads, e.g. W1,W3 (default: all)")
    run.add_argument("--out", default=None, help="output directory (default bench/out/<timestamp>)")
    prof = sub.add_parser("profile", help="py-spy an Interlock worker process under W1's no-op load")
    prof.add_argument("--tasks", type=int, default=4000)
    prof.add_argument("--seconds", type=int, default=8)
    prof.add_argument("--out", default=None, help="output directory (default bench/out/profile-<timestamp>)")
    prof.add_argument("--gil", action="store_true", help="only the thread holding the GIL: CPU, not waits")
    faults = sub.add_parser("faults", help="inject faults under load on private services; write FAULTS.md")
    faults.add_argument("--rounds", type=int, default=2, help="injections of each fault")
    faults.add_argument("--rate", type=float, default=10.0, help="HTTP submissions per second")
    faults.add_argument("--only", default="", help="comma-separated faults (default: all)")
    faults.add_argument("--out", default=None, help="output directory (default bench/out/faults-<timestamp>)")
    soak = sub.add_parser("soak", help="a long steady load on private services: does memory, or anything, grow?")
    soak.add_argument("--minutes", type=float, required=True, help="how long the load runs")
    soak.add_argument("--rate", type=float, default=10.0, help="HTTP submissions per second")
    soak.add_argument("--interval", type=float, default=30.0, help="seconds between samples")
    soak.add_argument("--retention", type=float, default=900.0, help="task and event retention (s)")
    soak.add_argument("--out", default=None, help="output directory (default bench/out/soak-<timestamp>)")
    agents = sub.add_parser("agents", help="W2's agent tasks on one Interlock worker: tasks/s, CPU per task")
    agents.add_argument("--tasks", type=int, default=300)
    agents.add_argument("--latency", type=float, default=1.0, help="the fake LLM's latency per call (s)")
    agents.add_argument("--env", action="append", default=[], help="NAME=VALUE for the worker (repeatable)")
    agents.add_argument("--py-spy", action="store_true", help="also sample one worker process")
    agents.add_argument("--gil", action="store_true", help="with --py-spy: only the thread holding the GIL")
    agents.add_argument("--seconds", type=int, default=10)
    agents.add_argument("--workflow", default="agent", help="what to submit (bench_noop: W1's no-op tasks)")
    agents.add_argument("--out", default=None, help="output directory (default bench/out/agents-<timestamp>)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if args.command == "profile":
        from .profile import profile_worker

        out = Path(args.out) if args.out else Path(__file__).resolve().parent / "out" / f"profile-{stamp}"
        return profile_worker(out, tasks=args.tasks, seconds=args.seconds, gil=args.gil)
    if args.command == "faults":
        from .faults import FAULTS, run_faults

        picked = [f.strip() for f in args.only.split(",") if f.strip()]
        if unknown_faults := [f for f in picked if f not in FAULTS]:
            print(f"bench: unknown fault(s) {unknown_faults}; known: {list(FAULTS)}", file=sys.stderr)
            return 2
        out = Path(args.out) if args.out else Path(__file__).resolve().parent / "out" / f"faults-{stamp}"
        return run_faults(out, rounds=args.rounds, rate=args.rate, only=picked)
    if args.command == "soak":
        from .soak import run_soak

        out = Path(args.out) if args.out else Path(__file__).resolve().parent / "out" / f"soak-{stamp}"
        return run_soak(out, minutes=args.minutes, rate=args.rate, interval=args.interval, retention=args.retention)
    if args.command == "agents":
        from .agents_profile import profile_agents

        out = Path(args.out) if args.out else Path(__file__).resolve().parent / "out" / f"agents-{stamp}"
        env = dict(item.split("=", 1) for item in args.env)
        return profile_agents(
            out,
            tasks=args.tasks,
            latency=args.latency,
            env=env,
            py_spy=args.py_spy,
            gil=args.gil,
            seconds=args.seconds,
            workflow=args.workflow,
        )
    from .workloads import FULL, QUICK, WORKLOADS

    chosen = [w.strip().upper() for w in args.only.split(",") if w.strip()] or list(WORKLOADS)
    unknown = [w for w in chosen if w not in WORKLOADS]
    if unknown:
        print(f"bench: unknown workload(s) {unknown}; known: {list(WORKLOADS)}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "out" / stamp
    out.mkdir(parents=True, exist_ok=True)
    return _run(chosen, FULL if args.full else QUICK, "full" if args.full else "quick", out, argv or sys.argv[1:])


def _run(chosen: list[str], sizes: Any, mode: str, out: Path, argv: list[str]) -> int:
    from testkit.processes import base_env, free_port
    from testkit.waiting import wait_until

    from .report import machine, markdown, ratios, table, targets
    from .services import Proc, Scratch
    from .systems import Lab
    from .workloads import WORKLOADS

    started, t0 = datetime.now(UTC).isoformat(timespec="seconds"), time.monotonic()
    scratch = Scratch()
    port = free_port()
    llm = Proc([sys.executable, "-m", "bench.llm_server", str(port), "1.0"], env=base_env(), log=out / "llm-server.log")
    results: dict[str, Any] = {}
    lab: Lab | None = None
    try:
        scratch.open()
        print(f"bench: {mode} run; vhosts {list(scratch.vhosts.values())}, database {scratch.database}; output {out}")
        (out / "logs").mkdir(exist_ok=True)
        llm.start()
        wait_until(lambda: "fake OpenAI server" in llm.log_path.read_text(), timeout=30, what="the fake LLM")
        lab = Lab(scratch, out, f"http://127.0.0.1:{port}/v1")
        for name in chosen:
            print(f"{name}:")
            begun = time.monotonic()
            try:
                results[name] = WORKLOADS[name](lab, sizes)
            except Exception as exc:
                traceback.print_exc()
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
                lab.stop_all()
            results[name]["seconds"] = round(time.monotonic() - begun, 1)
            (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    finally:
        if lab is not None:
            lab.stop_all()
        llm.stop()
        scratch.close()
    meta = {
        "mode": mode,
        "argv": argv,
        "started": started,
        "duration_s": time.monotonic() - t0,
        "machine": machine(),
        "sizes": sizes.__dict__,
    }
    payload = {"meta": meta, "results": results, "ratios": ratios(results), "targets": targets(results)}
    (out / "results.json").write_text(json.dumps(payload, indent=2, default=str))
    (out / "report.md").write_text(markdown(results, meta))
    print()
    print(table(results))
    print()
    for row in targets(results):
        print(f"  {row['target']:<38} wanted {row['wanted']:<28} got {row['measured']:<34} {row['met']} {row['gap']}")
    print(f"\nbench: wrote {out / 'results.json'} and {out / 'report.md'}")
    return 0
