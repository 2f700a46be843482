"""How each system is started, fed and read: Interlock, the article's Celery setup, plain Dramatiq."""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from testkit.processes import base_env, free_port, interlock_command, wait_http

from .observed import PublishDelays
from .services import Proc, Scratch

SUBMIT_THREADS = 8


class Lab:
    """The scratch services, the fake LLM and the log directory of one run."""

    def __init__(self, scratch: Scratch, out: Path, llm_url: str) -> None:
        self.scratch = scratch
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.llm_url = llm_url
        self._interlock: Any = None
        self._procs: list[Proc] = []
        self._api_key: str | None = None
        self.auth_note = ""

    # -- processes ---------------------------------------------------------------------------

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        proc = Proc(args, env=base_env(env), log=self.logs / f"{name}.log").start()
        self._procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self._procs:
            self._procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self._procs):
            self.stop(proc)
        if self._interlock is not None:
            self._interlock.close()
            self._interlock = None

    def interlock_env(self, **extra: str) -> dict[str, str]:
        return {
            "INTERLOCK_DATABASE_URL": self.scratch.database_url,
            "INTERLOCK_BROKER_URL": self.scratch.broker_url("interlock"),
            "INTERLOCK_AGENT_MODULES": "testkit.workflows",
            "INTERLOCK_WORKER_METRICS_PORT": "0",  # other engineers' runs share this machine
            "OPENAI_BASE_URL": self.llm_url,
            "OPENAI_API_KEY": "sk-bench-not-a-real-key",
            **extra,
        }

    def celery_env(self) -> dict[str, str]:
        return {
            "BENCH_BROKER_URL": self.scratch.broker_url("celery"),
            "BENCH_DATABASE_URL": self.scratch.database_url,
            "BENCH_LLM_URL": self.llm_url,
        }

    def dramatiq_env(self) -> dict[str, str]:
        return {
            "BENCH_BROKER_URL": self.scratch.broker_url("dramatiq"),
            "BENCH_DATABASE_URL": self.scratch.database_url,
            "BENCH_LLM_URL": self.llm_url,
        }

    def interlock_worker(self, name: str, **extra: str) -> Proc:
        return self.spawn(name, interlock_command("worker"), self.interlock_env(**extra))

    def interlock_api_key(self) -> str | None:
        """An API key (scopes submit, read) made with `interlock keys create`; None if auth cannot be used."""
        if self._api_key is None and not self.auth_note:
            import json
            import subprocess

            args = interlock_command("keys", "create", "--tenant", "bench")
            args += ["--scope", "submit,read", "--json"]
            done = subprocess.run(args, env=base_env(self.interlock_env()), capture_output=True, text=True, timeout=60)
            try:
                self._api_key = str(json.loads(done.stdout.strip().splitlines()[-1])["key"])
                self.auth_note = "INTERLOCK_AUTH=on (the default): every request sends a bearer key"
            except (ValueError, KeyError, IndexError):
                self.auth_note = f"`interlock keys create` failed, so INTERLOCK_AUTH=off: {done.stderr[-300:]}"
        return self._api_key

    def interlock_api(self, name: str) -> tuple[Proc, str]:
        port = free_port()
        env = self.interlock_env() if self.interlock_api_key() else self.interlock_env(INTERLOCK_AUTH="off")
        proc = self.spawn(name, interlock_command("api", "--bind", f"127.0.0.1:{port}"), env)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", proc=proc)
        return proc, url

    def celery_worker(self, name: str, pool: str) -> Proc:
        args = [sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker", "--loglevel=info"]
        args += ["-Q", "default,high_priority,low_priority"]
        args += ["-P", "threads", "-c", "64"] if pool == "threads" else ["-c", "4"]
        return self.spawn(name, args, self.celery_env())

    def celery_api(self, name: str) -> tuple[Proc, str]:
        port = free_port()
        args = [sys.executable, "-m", "uvicorn", "bench.celery_api:api", "--host", "127.0.0.1", "--port", str(port)]
        proc = self.spawn(name, args, self.celery_env())
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", proc=proc)
        return proc, url

    def dramatiq_worker(self, name: str) -> Proc:
        args = [sys.executable, "-m", "dramatiq", "bench.plain_dramatiq", "-p", "2", "-t", "8"]
        return self.spawn(name, args, self.dramatiq_env())

    # -- submitting in this process ----------------------------------------------------------

    def interlock(self) -> InterlockSubmitter:
        if self._interlock is None:
            self._interlock = InterlockSubmitter(self.scratch)
        return self._interlock  # type: ignore[no-any-return]

    def celery_app(self) -> Any:
        import os

        for key, value in self.celery_env().items():
            os.environ[key] = value  # read by bench.celery_app at import; this process only
        from . import celery_app

        return celery_app

    def dramatiq_module(self) -> Any:
        import os

        for key, value in self.dramatiq_env().items():
            os.environ[key] = value
        from . import plain_dramatiq

        return plain_dramatiq


class InterlockSubmitter:
    """Interlock's own submission path (row committed, then a confirmed publish), in this process."""

    def __init__(self, scratch: Scratch) -> None:
        from actors.broker import build_broker
        from actors.catalogue import load_catalogue
        from actors.runtime import Runtime
        from interlock.settings import Settings

        self.settings = Settings.from_env(
            {},
            database_url=scratch.database_url,
            broker_url=scratch.broker_url("interlock"),
            agent_modules="testkit.workflows",
            worker_threads=SUBMIT_THREADS + 4,
        )
        self.runtime = Runtime.open(self.settings)
        self.catalogue = load_catalogue(self.settings)
        self.broker = build_broker(self.settings, self.runtime, self.catalogue)

    def submit(self, workflow: str, input: dict[str, Any], priority: int = 4) -> str:
        from actors.submit import submit

        done = submit(
            self.runtime.sessions, self.broker, self.catalogue, workflow=workflow, input=input, priority=priority
        )
        return str(getattr(done, "task", done).id)

    def publish_delays(self) -> PublishDelays:
        """The outbox relay's commit-to-publish delays so far (this process's submissions)."""
        from actors.outbox_relay import relay_of

        relay = relay_of(self.broker)
        return PublishDelays.of(relay.publish_delay) if relay is not None else PublishDelays()

    def close(self) -> None:
        self.broker.close()
        self.runtime.close()


def submit_many(submit_one: Callable[[int], object], n: int, *, threads: int = SUBMIT_THREADS) -> None:
    """Call ``submit_one(i)`` for i in range(n) from ``threads`` threads; errors propagate."""
    if threads <= 1:
        for i in range(n):
            submit_one(i)
        return
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(_chunk, submit_one, range(k, n, threads)) for k in range(threads)]:
            future.result()


def _chunk(submit_one: Callable[[int], object], indexes: range) -> None:
    for i in indexes:
        submit_one(i)


def new_id() -> str:
    return str(uuid.uuid4())


class RssSampler:
    """Samples the RSS (MB, summed over each process tree) of named processes every ``interval``."""

    def __init__(self, procs: dict[str, Proc], interval: float = 0.5) -> None:
        self.procs = procs
        self.interval = interval
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = 0.0

    def _run(self) -> None:
        import time

        while not self._stop.is_set():
            row = {"t": round(time.monotonic() - self._t0, 2)}
            row.update({name: round(proc.rss_mb(), 1) for name, proc in self.procs.items()})
            self.samples.append(row)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        import time

        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


__all__ = ["Lab", "InterlockSubmitter", "submit_many", "new_id", "RssSampler"]
