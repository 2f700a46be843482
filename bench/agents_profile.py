"""``python -m bench agents``: W2's agent tasks on one Interlock worker, its CPU per task, and a profile.

Starts the fake LLM (its own process, ``--latency`` seconds), a scratch vhost and database and an
``interlock worker`` (defaults, or ``--env NAME=VALUE``), submits ``--tasks`` agent tasks (two LLM
calls each) and reports tasks/s end to end, the worker processes' CPU per task (psutil), and the
fake server's most concurrent requests. With ``--py-spy`` it also samples one worker process
(``--gil``: only the thread holding the GIL, i.e. CPU) and prints where the samples went.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from testkit.processes import base_env, free_port
from testkit.waiting import wait_until

from .profile import _summarise
from .services import Proc, Scratch
from .systems import Lab, submit_many
from .workloads import _cpu_seconds, interlock_done

__all__ = ["profile_agents"]


def profile_agents(
    out: Path,
    *,
    tasks: int = 300,
    latency: float = 1.0,
    env: dict[str, str] | None = None,
    py_spy: bool = False,
    gil: bool = False,
    seconds: int = 10,
    top: int = 45,
    workflow: str = "agent",
) -> int:
    out.mkdir(parents=True, exist_ok=True)
    scratch = Scratch()
    port = free_port()
    llm = Proc([sys.executable, "-m", "bench.llm_server", str(port), str(latency)], env=base_env(), log=out / "llm.log")
    lab: Lab | None = None
    try:
        scratch.open()
        llm.start()
        wait_until(lambda: "fake OpenAI server" in llm.log_path.read_text(), timeout=30, what="the fake LLM")
        lab = Lab(scratch, out, f"http://127.0.0.1:{port}/v1")
        worker = lab.interlock_worker("agents-worker", **(env or {}))
        client = lab.interlock()
        query = {"query": "Explain durable execution"}
        client.submit(workflow, query)
        wait_until(lambda: interlock_done(lab) >= 1, timeout=90, interval=0.1, what="the warm-up task")
        procs = worker.tree()
        cpu_before = _cpu_seconds(procs)
        llm_before = _cpu_seconds(llm.tree())
        started = time.monotonic()
        feeder = threading.Thread(
            target=submit_many, args=(lambda i: client.submit(workflow, query), tasks), daemon=True
        )
        feeder.start()
        if py_spy:
            time.sleep(2.0)
            raw = out / "worker.raw.txt"
            subprocess.run(
                ["py-spy", "record", "--pid", str(procs[-1].pid), "--duration", str(seconds), "--rate", "200"]
                + ["--format", "raw", "--output", str(raw), "--nonblocking"]
                + (["--gil"] if gil else []),
                check=True,
                capture_output=True,
            )
        feeder.join()
        wait_until(lambda: interlock_done(lab) >= tasks + 1, timeout=60 + 3 * tasks, interval=0.05, what="tasks")
        wall = time.monotonic() - started
        worker_ms = 1000 * (_cpu_seconds(procs) - cpu_before) / tasks
        llm_ms = 1000 * (_cpu_seconds(llm.tree()) - llm_before) / tasks
        print(
            f"agents: {tasks} tasks in {wall:.1f} s = {tasks / wall:.1f} tasks/s; "
            f"worker CPU {worker_ms:.1f} ms/task; fake LLM CPU {llm_ms:.1f} ms/task; "
            f"machine load {psutil.getloadavg()[0]:.1f}"
        )
        if py_spy:
            text = _summarise(out / "worker.raw.txt", top)
            (out / "worker.top.txt").write_text(text)
            print(text)
    finally:
        if lab is not None:
            lab.stop_all()
        llm.stop()
        scratch.close()
    return 0
