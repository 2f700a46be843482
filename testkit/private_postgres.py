"""A PostgreSQL cluster of a test's own, which it may restart or stop without touching anyone else's.

The machine's PostgreSQL serves other people's tests at the same moment, so a test (or a fault
benchmark) that restarts the database starts this instead: ``initdb`` into a temporary directory,
run as the ``postgres`` user when we are root (PostgreSQL refuses to run as root), listening on
127.0.0.1 on a free port with trust authentication. ``restart()`` is ``pg_ctl restart -m fast``:
every connection is cut, the server is down for a moment, then it accepts connections again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from testkit.processes import free_port
from testkit.service import PrivateService

__all__ = ["PrivatePostgres", "postgres_bin_dir"]

#: Settings for a scratch cluster: no fsync (a test never survives a power cut), room for workers.
DEFAULT_OPTIONS = {"fsync": "off", "max_connections": "200", "listen_addresses": "127.0.0.1"}


def postgres_bin_dir() -> Path:
    """Where ``initdb`` and ``pg_ctl`` are: ``$PATH``, else the newest Debian ``/usr/lib/postgresql/N/bin``."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if not versions:
        raise RuntimeError("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
    return versions[-1].parent


class PrivatePostgres(PrivateService):
    """One private cluster: ``with PrivatePostgres() as pg: url = pg.create_database("x")``."""

    def __init__(self, *, options: dict[str, str] | None = None, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir or postgres_bin_dir()
        self.options = {**DEFAULT_OPTIONS, **(options or {})}
        self.port = 0
        self.directory: Path | None = None

    @property
    def data(self) -> Path:
        assert self.directory is not None, "start() first"
        return self.directory / "data"

    @property
    def log(self) -> Path:
        assert self.directory is not None, "start() first"
        return self.directory / "postgresql.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> PrivatePostgres:
        """initdb (the first time) and start; returns when the server accepts connections."""
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="interlock-pg-"))
            if os.geteuid() == 0:
                shutil.chown(self.directory, user="postgres", group="postgres")
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
            self.port = free_port()
        self._pg_ctl("start", "-l", str(self.log))
        return self

    def restart(self, *, mode: str = "fast", down_for: float = 0.0) -> float:
        """Stop (``pg_ctl stop -m <mode>``: every connection is cut), stay down ``down_for`` seconds, start.

        A restart of a small cluster takes a fraction of a second; a production server with more
        memory and WAL to replay takes seconds (``down_for`` stands in for that). Returns the seconds
        the server did not accept connections.
        """
        started = time.monotonic()
        self.stop(mode=mode)
        time.sleep(down_for)  # the outage itself, not a wait for work
        self._pg_ctl("start", "-l", str(self.log))
        return time.monotonic() - started

    def stop(self, *, mode: str = "fast") -> None:
        if self.directory is not None and (self.data / "postmaster.pid").exists():
            self._pg_ctl("stop", "-m", mode)

    def close(self) -> None:
        """Stop the server (immediately) and delete its files."""
        if self.directory is None:
            return
        try:
            self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def create_database(self, name: str) -> str:
        """Create ``name`` and return its URL."""
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _pg_ctl(self, action: str, *args: str) -> None:
        settings = " ".join(f"-c {name}={value}" for name, value in self.options.items())
        options = f"-p {self.port} -k {self.directory} {settings}"
        self._run("pg_ctl", action, "-D", str(self.data), "-w", "-t", "60", "-o", options, *args)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.directory and self.log.exists() else ""
            raise RuntimeError(f"{program} {args[0]} failed ({done.returncode}): {done.stderr or done.stdout}\n{log}")
