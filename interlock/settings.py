"""Every tunable of Interlock, read from the environment once at the entry point.

Library code never reads ``os.environ``: the entry point builds a :class:`Settings` with
:meth:`Settings.from_env` and passes it down. Each field names its environment variable and
default in one place, which the README table and ``interlock config`` are generated from.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["Settings", "SettingsError", "setting_rows", "markdown_table"]

SECRET_FIELDS = frozenset({"openai_api_key"})


class SettingsError(ValueError):
    """A configuration value could not be understood."""


def _setting(env: str, default: Any, help: str) -> Any:
    return field(default=default, metadata={"env": env, "help": help})


def _default_database_url() -> str:
    return f"sqlite:///{Path('interlock.db').resolve()}"


@dataclass(frozen=True)
class Settings:
    """Typed, immutable configuration shared by the API, the workers and the scheduler."""

    database_url: str = _setting(
        "INTERLOCK_DATABASE_URL",
        "",
        "SQLAlchemy URL of Interlock's own database; `postgresql://` uses psycopg 3. "
        "Empty: a SQLite file `interlock.db` in the working directory.",
    )
    broker_url: str = _setting(
        "INTERLOCK_BROKER_URL",
        "",
        "`amqp://user:pass@host:5672/vhost` for RabbitMQ. "
        "Empty: the in-process broker (single process only).",
    )
    api_url: str = _setting(
        "INTERLOCK_API_URL", "http://127.0.0.1:8000", "Where the CLI client commands reach the API."
    )
    openai_api_key: str = _setting(
        "OPENAI_API_KEY", "", "Key for the OpenAI-compatible endpoint. Never logged or returned."
    )
    openai_base_url: str = _setting(
        "OPENAI_BASE_URL",
        "",
        "OpenAI-compatible endpoint. With neither key nor base URL, the offline stand-in model answers.",
    )
    agent_modules: str = _setting(
        "INTERLOCK_AGENT_MODULES",
        "",
        "Comma-separated extra Python modules that register workflows (your own agents).",
    )
    model: str = _setting("INTERLOCK_MODEL", "gpt-4o-mini", "Model name sent to the LLM endpoint.")
    llm_timeout: float = _setting("INTERLOCK_LLM_TIMEOUT", 60.0, "Seconds one LLM call may take.")
    time_limit: float = _setting(
        "INTERLOCK_TIME_LIMIT", 3600.0, "Hard limit in seconds for one task attempt; the task is stopped."
    )
    soft_time_limit: float = _setting(
        "INTERLOCK_SOFT_TIME_LIMIT",
        3300.0,
        "Soft limit in seconds; at the next step boundary the actor sees SoftTimeLimitExceeded and can "
        "finish early.",
    )
    max_retries: int = _setting(
        "INTERLOCK_MAX_RETRIES", 3, "Retries for transient errors (network, timeout, 429, 5xx)."
    )
    min_backoff: float = _setting(
        "INTERLOCK_MIN_BACKOFF", 15.0, "Seconds before the first retry; doubles each retry."
    )
    max_backoff: float = _setting("INTERLOCK_MAX_BACKOFF", 3600.0, "Upper bound of one retry backoff (s).")
    max_deliveries: int = _setting(
        "INTERLOCK_MAX_DELIVERIES",
        5,
        "Times a task may be started (retries and crash redeliveries together) before it is dead-lettered.",
    )
    lease_seconds: float = _setting(
        "INTERLOCK_LEASE_SECONDS",
        30.0,
        "A running task's lease in PostgreSQL; renewed by heartbeat, a crashed worker's task is "
        "re-published when it lapses.",
    )
    maintenance_interval: float = _setting(
        "INTERLOCK_MAINTENANCE_INTERVAL",
        1.0,
        "Seconds between a worker's passes that publish due delayed messages and reclaim lapsed leases.",
    )
    result_ttl: float = _setting(
        "INTERLOCK_RESULT_TTL", 7 * 86400.0, "Seconds Dramatiq actor results stay in the result backend."
    )
    queue_max_priority: int = _setting(
        "INTERLOCK_QUEUE_MAX_PRIORITY", 10, "`x-max-priority` declared on every work queue."
    )
    worker_processes: int = _setting(
        "INTERLOCK_WORKER_PROCESSES", 2, "Worker processes per `interlock worker`."
    )
    worker_threads: int = _setting("INTERLOCK_WORKER_THREADS", 8, "Threads per worker process.")
    max_tasks_per_child: int = _setting(
        "INTERLOCK_MAX_TASKS_PER_CHILD",
        0,
        "Recycle a worker process after this many tasks (0: never), for libraries that leak memory.",
    )
    api_workers: int = _setting("INTERLOCK_API_WORKERS", 2, "gunicorn worker processes for `interlock api`.")
    api_threads: int = _setting("INTERLOCK_API_THREADS", 8, "Threads per gunicorn worker.")
    max_body_bytes: int = _setting(
        "INTERLOCK_MAX_BODY_BYTES", 1_048_576, "Largest request body the API accepts (413 beyond)."
    )
    log_level: str = _setting("INTERLOCK_LOG_LEVEL", "INFO", "Python logging level.")
    log_format: str = _setting("INTERLOCK_LOG_FORMAT", "text", "`text` or `json` (one object per line).")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); ``overrides`` win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f.name, f.metadata["env"], raw, type(f.default))
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.soft_time_limit > self.time_limit:
            raise SettingsError("INTERLOCK_SOFT_TIME_LIMIT must not exceed INTERLOCK_TIME_LIMIT")
        if self.log_format not in {"text", "json"}:
            raise SettingsError("INTERLOCK_LOG_FORMAT must be 'text' or 'json'")
        if not 0 < self.queue_max_priority <= 255:
            raise SettingsError("INTERLOCK_QUEUE_MAX_PRIORITY must be between 1 and 255")
        if self.max_deliveries < 1:
            raise SettingsError("INTERLOCK_MAX_DELIVERIES must be at least 1")

    @property
    def effective_database_url(self) -> str:
        """The SQLAlchemy URL to connect to, with ``postgresql://`` mapped to psycopg 3."""
        url = self.database_url or _default_database_url()
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url

    @property
    def uses_rabbitmq(self) -> bool:
        return self.broker_url.startswith(("amqp://", "amqps://"))

    @property
    def llm_offline(self) -> bool:
        return not self.openai_api_key and not self.openai_base_url

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        return {f.metadata["env"]: str(getattr(self, f.name)) for f in fields(self)}

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _convert(name: str, env: str, raw: str, kind: type) -> Any:
    try:
        if kind is bool:
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        return raw
    except ValueError as exc:
        raise SettingsError(f"{env}={raw!r} is not a valid {kind.__name__}") from exc


def setting_rows(settings: Settings | None = None) -> Iterator[tuple[str, str, str]]:
    """(variable, value-or-default, description) for every setting; secrets are masked."""
    for f in fields(Settings):
        value = getattr(settings, f.name) if settings else f.default
        if f.name in SECRET_FIELDS and value:
            value = "***"
        shown = "" if value == "" else str(value)
        yield f.metadata["env"], shown, f.metadata["help"]


def markdown_table() -> str:
    """The README's configuration table, generated so that it cannot drift from the code."""
    lines = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for name, default, help_text in setting_rows():
        shown = f"`{default}`" if default else "(empty)"
        lines.append(f"| `{name}` | {shown} | {help_text} |")
    return "\n".join(lines)
