"""Run Interlock's real commands as subprocesses for acceptance tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

from tests.support import wait_until

ROOT = Path(__file__).resolve().parent.parent


class Proc:
    """An ``interlock`` subcommand in its own process group, logged to a file, stopped on exit."""

    def __init__(self, args: list[str], *, env: dict[str, str], log: Path, cwd: Path | None = None) -> None:
        self.args = args
        self.env = env
        self.log_path = log
        self.cwd = cwd or ROOT
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Proc:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "interlock.cli", *self.args],
            env=self.env,
            cwd=self.cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()
        self.process = None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The parent's environment without any INTERLOCK_/OPENAI_ settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTERLOCK_", "OPENAI_"))}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def wait_http(url: str, *, timeout: float = 60.0, proc: Proc | None = None) -> None:
    def up() -> bool:
        if proc is not None and proc.process is not None and proc.process.poll() is not None:
            raise AssertionError(f"process exited early:\n{proc.output()}")
        try:
            return requests.get(url, timeout=1).status_code < 500
        except requests.RequestException:
            return False

    wait_until(up, timeout=timeout, interval=0.2, what=url)
