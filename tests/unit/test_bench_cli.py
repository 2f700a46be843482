"""The benchmark command imports and answers --help without any service (it is not run in tests)."""

from __future__ import annotations

import subprocess
import sys

from tests.processes import ROOT


def test_bench_module_imports() -> None:
    import bench

    assert callable(bench.main)


def test_bench_help_exits_zero() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "run" in done.stdout
