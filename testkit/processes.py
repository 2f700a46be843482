"""Child processes (Interlock's commands, the benchmarked systems) in process groups of their own."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO, Any, Self

import requests

from testkit.waiting import wait_until

__all__ = ["ROOT", "Proc", "base_env", "free_port", "interlock_command", "wait_http"]

ROOT = Path(__file__).resolve().parent.parent


def interlock_command(*args: str) -> list[str]:
    """The ``interlock`` command line with this interpreter (the one whose environment is under test)."""
    return [sys.executable, "-m", "interlock.cli", *args]


class Proc:
    """A child command in its own process group, logged to a file; ``stop()`` ends the whole group.

    ``start()``/``stop()``, or a ``with`` block. The log is appended to, so a restart keeps the
    earlier output.
    """

    def __init__(self, args: list[str], *, env: dict[str, str], log: Path, cwd: Path | None = None) -> None:
        self.args = args
        self.env = env
        self.log_path = log
        self.cwd = cwd or ROOT
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> Self:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.args,
            env=self.env,
            cwd=self.cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM to the group, SIGKILL if it has not ended within 20 s, then SIGKILL to any leftovers."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):  # leftovers of the group
            os.killpg(self.process.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
        self.process = None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The parent's environment without any INTERLOCK_/OPENAI_/BENCH_ settings, plus ``extra``.

    ``PYTHONPATH`` is the project's root, so a child imports ``tests``, ``bench`` and ``testkit``
    modules named in ``INTERLOCK_AGENT_MODULES``.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTERLOCK_", "OPENAI_", "BENCH_"))}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, *, timeout: float = 60.0, proc: Proc | None = None) -> None:
    """Wait until ``url`` answers below 500; fail at once, with its log, if ``proc`` has exited."""

    def up() -> bool:
        if proc is not None and proc.process is not None and proc.process.poll() is not None:
            raise RuntimeError(f"process exited early ({proc.log_path}):\n{proc.output()[-20000:]}")
        try:
            return requests.get(url, timeout=1).status_code < 500
        except requests.RequestException:
            return False

    wait_until(up, timeout=timeout, interval=0.2, what=url)
