"""The benchmark command answers --help without any service or the bench extra (it is not run in tests).

It runs as a command, not imported: the test suite does not import ``bench`` (what both share is in
``testkit``).
"""

from __future__ import annotations

import subprocess
import sys

from tests.processes import ROOT


def test_bench_help_exits_zero() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "run" in done.stdout


def test_bench_soak_help_names_its_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "soak", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    for option in ("--minutes", "--rate", "--interval", "--retention"):
        assert option in done.stdout


def test_bench_soak_requires_minutes() -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "soak"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--minutes" in done.stderr
