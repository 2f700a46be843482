"""Run Interlock's real commands as subprocesses for acceptance tests (on ``testkit.processes``)."""

from __future__ import annotations

from pathlib import Path

from testkit import processes
from testkit.processes import ROOT, base_env, interlock_command, wait_http

__all__ = ["ROOT", "Proc", "base_env", "wait_http"]


class Proc(processes.Proc):
    """An ``interlock`` subcommand (``Proc(["worker", ...])``) in its own process group, logged to a file."""

    def __init__(self, args: list[str], *, env: dict[str, str], log: Path, cwd: Path | None = None) -> None:
        super().__init__(interlock_command(*args), env=env, log=log, cwd=cwd)
