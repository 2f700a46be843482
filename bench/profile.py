"""``python -m bench profile``: where an Interlock worker process spends W1's no-op tasks (py-spy).

Starts a scratch vhost and database, an ``interlock worker`` (defaults), submits no-op tasks from
this process and samples one worker process with ``py-spy record --format raw`` (idle threads
left out; with ``--gil`` only the thread holding the GIL: CPU rather than waits). Prints the
functions with the most samples, inclusive and by leaf.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from testkit.waiting import wait_until

from .services import Scratch
from .systems import Lab, submit_many
from .workloads import interlock_done

__all__ = ["profile_worker"]


def _summarise(raw: Path, top: int) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1] if " (" in f else f for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += n
        leaf[frames[-1]] += n
    lines = [f"{total} samples of non-idle threads", "", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    lines += ["", "leaf (self):"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in leaf.most_common(top)]
    return "\n".join(lines)


def profile_worker(out: Path, *, tasks: int = 4000, seconds: int = 8, top: int = 40, gil: bool = False) -> int:
    if shutil.which("py-spy") is None:
        print("bench: py-spy is not installed (pip install -e '.[bench]')", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    scratch = Scratch()
    lab: Lab | None = None
    try:
        scratch.open()
        lab = Lab(scratch, out, "http://127.0.0.1:9/v1")
        worker = lab.interlock_worker("profile-interlock-worker")
        client = lab.interlock()
        client.submit("bench_noop", {"query": "warm"})
        wait_until(lambda: interlock_done(lab) >= 1, timeout=60, what="the warm-up task")
        feeder = threading.Thread(
            target=submit_many, args=(lambda i: client.submit("bench_noop", {"query": "p"}), tasks), daemon=True
        )
        feeder.start()
        time.sleep(1.0)
        child = worker.tree()[-1].pid
        raw = out / "worker.raw.txt"
        subprocess.run(
            ["py-spy", "record", "--pid", str(child), "--duration", str(seconds), "--rate", "200"]
            + ["--format", "raw", "--output", str(raw), "--nonblocking"]
            + (["--gil"] if gil else []),
            check=True,
            capture_output=True,
        )
        feeder.join()
        text = _summarise(raw, top)
        (out / "worker.top.txt").write_text(text)
        print(text)
        print(f"\nbench: raw stacks in {raw} (flamegraph.pl or speedscope can read them)")
    finally:
        if lab is not None:
            lab.stop_all()
        scratch.close()
    return 0
