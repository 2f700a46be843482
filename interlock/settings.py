"""Every tunable of Interlock, read from the environment once at the entry point.

Library code never reads ``os.environ``: the entry point builds a :class:`Settings` with
:meth:`Settings.from_env` and passes it down. Each field names its environment variable, its
default, its syntax (``interlock.env_syntax``: the text is parsed once, here, into the typed value
every consumer reads) and whether it is a secret, in one place, which the settings table in
``docs/configuration.md`` and ``interlock config`` are generated from.

Why this module is longer than 350 lines: the field table alone is about 300 (70 settings, each
with its help text); splitting it would scatter what an operator reads as one list, in the order
the README shows it. The syntaxes live in ``env_syntax`` and the root error in ``errors``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .env_syntax import (
    COUNTS,
    INTEGER,
    NAMES,
    NUMBER,
    ON_OFF,
    PAIRS,
    PER_MINUTE,
    PRICES,
    RATE_LIMITS,
    TEXT,
    Syntax,
    parse_pairs,
)
from .errors import SettingsError
from .limits import Limit

__all__ = ["Settings", "SettingsError", "setting_rows", "markdown_table", "parse_pairs", "mask_password"]

_SYNTAX_OF_DEFAULT: dict[type, Syntax] = {str: TEXT, int: INTEGER, float: NUMBER}


def _setting(
    env: str, default: Any, help: str, *, syntax: Syntax | None = None, secret: bool = False, url: bool = False
) -> Any:
    """One setting: ``default`` is written as the variable is (``"scraper=10/m"``) for typed syntaxes.

    ``secret``: shown as ``***``. ``url``: shown with the password inside it masked.
    """
    if syntax is None:
        syntax = _SYNTAX_OF_DEFAULT[type(default)]
    elif isinstance(default, str):
        default = syntax.read(default, env)
    metadata = {"env": env, "help": help, "syntax": syntax, "secret": secret, "url": url}
    if isinstance(default, dict):
        return field(default_factory=default.copy, metadata=metadata)
    return field(default=default, metadata=metadata)


def _default_database_url() -> str:
    return f"sqlite:///{Path('interlock.db').resolve()}"


@dataclass(frozen=True)
class Settings:
    """Typed, immutable configuration shared by the API, the workers and the scheduler.

    Maps are plain dicts (so settings pickle into spawned worker processes), typed ``Mapping``
    because nobody may change them.
    """

    database_url: str = _setting(
        "INTERLOCK_DATABASE_URL",
        "",
        "SQLAlchemy URL of Interlock's own database; `postgresql://` uses psycopg 3. "
        "Empty: a SQLite file `interlock.db` in the working directory.",
        url=True,
    )
    broker_url: str = _setting(
        "INTERLOCK_BROKER_URL",
        "",
        "`amqp://user:pass@host:5672/vhost` for RabbitMQ; several URLs separated by `;` (one per node of a "
        "cluster) are tried in turn, so a process reconnects to a surviving node. Empty: the in-process broker "
        "(single process only).",
        url=True,
    )
    api_url: str = _setting(
        "INTERLOCK_API_URL", "http://127.0.0.1:8000", "Where the CLI client commands reach the API."
    )
    api_key: str = _setting(
        "INTERLOCK_API_KEY",
        "",
        "API key the CLI client commands send (`Authorization: Bearer`). Never logged.",
        secret=True,
    )
    openai_api_key: str = _setting(
        "OPENAI_API_KEY",
        "",
        "Key for the OpenAI-compatible endpoint. Never logged or returned.",
        secret=True,
    )
    openai_base_url: str = _setting(
        "OPENAI_BASE_URL",
        "",
        "OpenAI-compatible endpoint. With neither key nor base URL, the offline stand-in model answers.",
    )
    agent_modules: tuple[str, ...] = _setting(
        "INTERLOCK_AGENT_MODULES",
        "",
        "Comma-separated extra Python modules that register workflows (your own agents).",
        syntax=NAMES,
    )
    rate_limits: Mapping[str, Limit] = _setting(
        "INTERLOCK_RATE_LIMITS",
        "scraper=10/m,tools=30/m",
        "Cluster-wide start limits per agent type (queue): `agent=count/unit`, unit s, m or h. "
        "A limited task waits; it is not failed and keeps its retries.",
        syntax=RATE_LIMITS,
    )
    agent_queues: Mapping[str, str] = _setting(
        "INTERLOCK_AGENT_QUEUES",
        "",
        "Move agent types to other queues: `agent=queue,...` (default: own queue).",
        syntax=PAIRS,
    )
    agent_concurrency: Mapping[str, int] = _setting(
        "INTERLOCK_AGENT_CONCURRENCY",
        "research=2,scraper=5,reviewer=2,planner=1,tools=3,default=8",
        "Threads per queue for `interlock worker --queues ...` when --threads is not given.",
        syntax=COUNTS,
    )
    llm_rpm: Mapping[str, Limit] = _setting(
        "INTERLOCK_LLM_RPM",
        "",
        "LLM requests per minute per model, cluster-wide: `model=count` (`*` for any).",
        syntax=PER_MINUTE,
    )
    llm_tpm: Mapping[str, Limit] = _setting(
        "INTERLOCK_LLM_TPM",
        "",
        "LLM tokens per minute per model, from each response's `usage`: `model=count`.",
        syntax=PER_MINUTE,
    )
    llm_prices: Mapping[str, tuple[float, float]] = _setting(
        "INTERLOCK_LLM_PRICES",
        "",
        "US dollars per million prompt/completion tokens, for the cost metric: `model=0.15/0.60,...` (`*` for any).",
        syntax=PRICES,
    )
    model: str = _setting("INTERLOCK_MODEL", "gpt-4o-mini", "Model name sent to the LLM endpoint.")
    llm_timeout: float = _setting("INTERLOCK_LLM_TIMEOUT", 60.0, "Seconds one LLM call may take.")
    time_limit: float = _setting(
        "INTERLOCK_TIME_LIMIT",
        3600.0,
        "Hard limit in seconds for one task attempt: the call it waits on is abandoned and it ends FAILURE, "
        "not retried.",
    )
    soft_time_limit: float = _setting(
        "INTERLOCK_SOFT_TIME_LIMIT",
        3300.0,
        "Soft limit in seconds; at the next step boundary (inside `ctx.until_soft_limit()`, also in a waiting "
        "call) the workflow sees SoftTimeLimitExceeded and can finish early.",
    )
    stage_time_limit: float = _setting(
        "INTERLOCK_STAGE_TIME_LIMIT",
        600.0,
        "Seconds one durable step (ctx.step) may run; past it the step is interrupted and retried.",
    )
    max_retries: int = _setting(
        "INTERLOCK_MAX_RETRIES", 3, "Retries for transient errors (network, timeout, 429, 5xx)."
    )
    min_backoff: float = _setting("INTERLOCK_MIN_BACKOFF", 15.0, "Seconds before the first retry; doubles each retry.")
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
    queue_sample_interval: float = _setting(
        "INTERLOCK_QUEUE_SAMPLE_INTERVAL",
        15.0,
        "Seconds between samples of the queue depths that workers record for the dashboard's chart "
        "(one sample per slot, whichever worker takes it).",
    )
    result_ttl: float = _setting(
        "INTERLOCK_RESULT_TTL", 7 * 86400.0, "Seconds Dramatiq actor results stay in the result backend."
    )
    queue_max_priority: int = _setting(
        "INTERLOCK_QUEUE_MAX_PRIORITY", 10, "`x-max-priority` declared on every work queue."
    )
    queue_type: str = _setting(
        "INTERLOCK_QUEUE_TYPE",
        "classic",
        "`classic` or `quorum`. Quorum: every work, delay and dead-letter queue is a replicated quorum queue "
        "with a delivery limit (for a RabbitMQ cluster), and priorities go to `<queue>.high` and `<queue>.low` "
        "band queues.",
    )
    worker_processes: int = _setting("INTERLOCK_WORKER_PROCESSES", 2, "Worker processes per `interlock worker`.")
    worker_threads: int = _setting(
        "INTERLOCK_WORKER_THREADS",
        32,
        "Threads per worker process: tasks it runs at once. Agent tasks mostly wait on LLMs and tools, so "
        "this is well above the cores; raise it for long LLM calls (threads share the database pool).",
    )
    agent_slots: int = _setting(
        "INTERLOCK_AGENT_SLOTS",
        256,
        "Tasks each worker process holds at once when `interlock worker` runs with its default threads "
        "(no --threads, no --queues): its Dramatiq threads and prefetch. Of them only "
        "INTERLOCK_WORKER_THREADS run before their first LLM or tool call at once; the rest wait on calls.",
    )
    database_pool_size: int = _setting(
        "INTERLOCK_DATABASE_POOL_SIZE",
        10,
        "PostgreSQL connections each process keeps (as many again on bursts). Threads share them: a task "
        "holds one only for its short transactions, never while it waits on an LLM or a tool.",
    )
    group_commit: bool = _setting(
        "INTERLOCK_GROUP_COMMIT",
        "on",
        "`on`: on PostgreSQL, the claims, progress reports and finishes of all threads of a process are "
        "written in batches by one writer (one statement per kind, committed before any caller returns). "
        "`off`: each thread writes its own.",
        syntax=ON_OFF,
    )
    max_tasks_per_child: int = _setting(
        "INTERLOCK_MAX_TASKS_PER_CHILD",
        0,
        "Recycle a worker process after this many tasks (0: never), for libraries that leak memory.",
    )
    api_workers: int = _setting("INTERLOCK_API_WORKERS", 2, "gunicorn worker processes for `interlock api`.")
    api_threads: int = _setting(
        "INTERLOCK_API_THREADS",
        32,
        "Threads per gunicorn worker. Each open `/agent/stream` holds one: set it above the concurrent streams. "
        "Submissions wait for a shared commit, not a CPU: more threads than cores make bigger batches.",
    )
    api_access_log: bool = _setting(
        "INTERLOCK_API_ACCESS_LOG",
        "off",
        "`on`: gunicorn's access log (one line per request on stdout) for `interlock api`. Off by default: "
        "it costs CPU on every request, and `/metrics` counts requests by route and status.",
        syntax=ON_OFF,
    )
    api_key_cache_seconds: float = _setting(
        "INTERLOCK_API_KEY_CACHE_SECONDS",
        5.0,
        "Seconds an API process reuses an API key's lookup: a revoked key keeps working at most this long "
        "(0: look every key up on every request).",
    )
    outbox_poll_interval: float = _setting(
        "INTERLOCK_OUTBOX_POLL_INTERVAL",
        0.5,
        "Seconds between an outbox relay's looks for messages other processes left (its own are published at once).",
    )
    outbox_batch_size: int = _setting(
        "INTERLOCK_OUTBOX_BATCH_SIZE", 500, "Messages an outbox relay publishes per confirmed batch."
    )
    outbox_fallback_seconds: float = _setting(
        "INTERLOCK_OUTBOX_FALLBACK_SECONDS",
        3.0,
        "Workers' maintenance publishes outbox messages left pending this long (their process died).",
    )
    worker_metrics_port: int = _setting(
        "INTERLOCK_WORKER_METRICS_PORT",
        9191,
        "Port of `interlock worker`'s Prometheus `/metrics` (summed over its processes); 0 turns it off.",
    )
    rabbitmq_ui: str = _setting(
        "INTERLOCK_RABBITMQ_UI", "http://127.0.0.1:15672/", "RabbitMQ's management UI, linked from the dashboard."
    )
    worker_metrics_host: str = _setting(
        "INTERLOCK_WORKER_METRICS_HOST",
        "127.0.0.1",
        "Address the worker metrics server listens on. It has no key: open it beyond this host "
        "(`0.0.0.0`) only on a private network, as compose does for Prometheus.",
    )
    max_body_bytes: int = _setting(
        "INTERLOCK_MAX_BODY_BYTES", 1_048_576, "Largest request body the API accepts (413 beyond)."
    )
    http_timeout: float = _setting(
        "INTERLOCK_HTTP_TIMEOUT", 10.0, "Seconds a tool's HTTP request may wait to connect or between bytes."
    )
    http_max_redirects: int = _setting(
        "INTERLOCK_HTTP_MAX_REDIRECTS", 5, "Redirects a URL tool follows; each hop is checked like the first."
    )
    scrape_max_bytes: int = _setting(
        "INTERLOCK_SCRAPE_MAX_BYTES", 2_000_000, "Largest HTML page `scrape_url` reads; bigger ones are refused."
    )
    api_max_bytes: int = _setting(
        "INTERLOCK_API_MAX_BYTES",
        5_000_000,
        "Largest JSON body `call_external_api` reads; bigger ones are refused.",
    )
    tools_allow_hosts: tuple[str, ...] = _setting(
        "INTERLOCK_TOOLS_ALLOW_HOSTS",
        "",
        "Comma-separated hostnames or CIDRs the URL tools may reach although they are loopback, "
        "private, link-local or otherwise non-public (SSRF guard). Empty: public addresses only.",
        syntax=NAMES,
    )
    tools_database_url: str = _setting(
        "INTERLOCK_TOOLS_DATABASE_URL",
        "",
        "PostgreSQL URL `execute_database_query` runs against, logging in as a role without superuser "
        "rights that may only SELECT what agents may read (a superuser login is refused). Empty: the SQL "
        "tool is disabled (never Interlock's own database by default).",
        url=True,
    )
    tools_database_role: str = _setting(
        "INTERLOCK_TOOLS_DATABASE_ROLE",
        "",
        "Optional role the SQL tool switches to (`SET ROLE`) after logging in, to read with fewer rights "
        "than the login has; the login must be a member. It narrows rights, it is no boundary: the login "
        "itself must be a restricted role (a superuser login is refused whatever this says). Empty: no switch.",
    )
    tools_statement_timeout_ms: int = _setting(
        "INTERLOCK_TOOLS_STATEMENT_TIMEOUT_MS", 5000, "Statement timeout (ms) of one SQL tool query."
    )
    tools_max_rows: int = _setting("INTERLOCK_TOOLS_MAX_ROWS", 1000, "Most rows the SQL tool returns.")
    tools_max_result_bytes: int = _setting(
        "INTERLOCK_TOOLS_MAX_RESULT_BYTES",
        2_000_000,
        "Most bytes of JSON rows the SQL tool returns (and caches); rows are streamed and "
        "the result ends with `truncated: true` before the one that would pass this.",
    )
    cache_ttl_api: float = _setting(
        "INTERLOCK_CACHE_TTL_API", 1800.0, "Seconds a `call_external_api` result is cached (0: never)."
    )
    cache_ttl_scrape: float = _setting(
        "INTERLOCK_CACHE_TTL_SCRAPE", 3600.0, "Seconds a `scrape_url` result is cached (0: never)."
    )
    cache_ttl_sql: float = _setting(
        "INTERLOCK_CACHE_TTL_SQL", 300.0, "Seconds an `execute_database_query` result is cached (0: never)."
    )
    breaker_threshold: int = _setting(
        "INTERLOCK_BREAKER_THRESHOLD",
        5,
        "Consecutive failures (5xx, timeouts, network errors) of one host that open its circuit breaker.",
    )
    breaker_reset: float = _setting(
        "INTERLOCK_BREAKER_RESET",
        30.0,
        "Seconds an open breaker fails calls fast (they are retried later) before one probe may pass.",
    )
    github_webhook_secret: str = _setting(
        "INTERLOCK_GITHUB_WEBHOOK_SECRET",
        "",
        "Secret of the GitHub webhook (`X-Hub-Signature-256`). Empty: `POST /webhook/github` answers 503. "
        "Never logged or returned.",
        secret=True,
    )
    slack_signing_secret: str = _setting(
        "INTERLOCK_SLACK_SIGNING_SECRET",
        "",
        "Signing secret of the Slack app (v0 signatures). Empty: `POST /webhook/slack` answers 503.",
        secret=True,
    )
    webhook_secret: str = _setting(
        "INTERLOCK_WEBHOOK_SECRET",
        "",
        "Secret of `POST /webhook/custom`: `X-Interlock-Signature-256: v1=<hex HMAC-SHA256 of "
        "v1:<timestamp>:<delivery id>:<body>>`, with `X-Interlock-Timestamp` (within 5 minutes) and "
        "`X-Interlock-Delivery`. Empty: it answers 503. Never logged or returned.",
        secret=True,
    )
    event_retention: float = _setting(
        "INTERLOCK_EVENT_RETENTION",
        7 * 86400.0,
        "Seconds events, webhook delivery ids, schedule slots, queue-depth samples and the rows of workers "
        "gone silent are kept before the cleanup job deletes them.",
    )
    task_retention: float = _setting(
        "INTERLOCK_TASK_RETENTION",
        30 * 86400.0,
        "Seconds a finished task, its event log and checkpoints are kept before the cleanup job deletes them.",
    )
    schedule_monitor_data_sources: str = _setting(
        "INTERLOCK_SCHEDULE_MONITOR_DATA_SOURCES",
        "0 * * * *",
        "When `interlock scheduler` enqueues the data-source monitor: a five-field cron expression (UTC), "
        "`every <N>s`, or `off`.",
    )
    schedule_cleanup_old_events: str = _setting(
        "INTERLOCK_SCHEDULE_CLEANUP_OLD_EVENTS",
        "0 2 * * *",
        "When the scheduler enqueues the retention cleanup (same forms).",
    )
    schedule_health_check: str = _setting(
        "INTERLOCK_SCHEDULE_HEALTH_CHECK",
        "every 300s",
        "When the scheduler enqueues the health check of database and broker (same forms).",
    )
    monitor_urls: tuple[str, ...] = _setting(
        "INTERLOCK_MONITOR_URLS",
        "",
        "Comma-separated URLs the monitor watches (ETag / Last-Modified, else a SHA-256 of the body); "
        "a change publishes `new_data_arrived`.",
        syntax=NAMES,
    )
    monitor_sql: str = _setting(
        "INTERLOCK_MONITOR_SQL",
        "",
        "A SQL query the monitor runs (read-only) on `INTERLOCK_MONITOR_DATABASE_URL`; a change in its "
        "result publishes `new_data_arrived`.",
    )
    monitor_database_url: str = _setting(
        "INTERLOCK_MONITOR_DATABASE_URL",
        "",
        "SQLAlchemy URL `INTERLOCK_MONITOR_SQL` runs against. Empty: no SQL source is watched.",
        secret=True,
    )
    monitor_timeout: float = _setting("INTERLOCK_MONITOR_TIMEOUT", 30.0, "Seconds one monitored source may take.")
    auth: bool = _setting(
        "INTERLOCK_AUTH",
        "on",
        "`on`: every API route but health, docs and signed webhooks needs `Authorization: Bearer <key>` "
        "(`interlock keys create`). `off`: no keys, one shared tenant (only for development: `interlock dev` "
        "uses it unless INTERLOCK_AUTH is set).",
        syntax=ON_OFF,
    )
    otel_endpoint: str = _setting(
        "INTERLOCK_OTEL_EXPORTER_OTLP_ENDPOINT",
        "",
        "OpenTelemetry collector that receives traces over OTLP/HTTP (`http://collector:4318`; `/v1/traces` is "
        "added). Empty: tracing is off, unless `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_TRACES_EXPORTER` is set.",
    )
    otel_standard_endpoint: str = _setting(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "",
        "The standard OpenTelemetry variable: turns tracing on too (the `INTERLOCK_` one wins when both are set).",
    )
    otel_traces_exporter: str = _setting(
        "OTEL_TRACES_EXPORTER",
        "",
        "`otlp` (to the endpoint above, `http://localhost:4318` if none), `console` (spans printed to "
        "standard output) or `none`. Empty: `otlp` when an endpoint is set, else tracing is off.",
    )
    otel_service_name: str = _setting(
        "OTEL_SERVICE_NAME",
        "",
        "The service name traces carry. Empty: `interlock-api`, `interlock-worker` or `interlock-dev`.",
    )
    log_level: str = _setting("INTERLOCK_LOG_LEVEL", "INFO", "Python logging level.")
    log_format: str = _setting("INTERLOCK_LOG_FORMAT", "text", "`text` or `json` (one object per line).")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); ``overrides`` win.

        An override given as text is read like its variable (``rate_limits="default=5/s"``).
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            variable, syntax = f.metadata["env"], f.metadata["syntax"]
            raw = env.get(variable)
            # Unset means the default; set-but-empty means empty for text, lists and maps (for
            # example INTERLOCK_RATE_LIMITS= turns the limits off) and the default for numbers.
            if raw is None or (raw == "" and syntax.empty_is_default):
                continue
            values[f.name] = syntax.read(raw, variable)
        values.update(_read_text_values(overrides))
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Checks across fields and of ranges; each value's own syntax was checked when it was read."""
        if self.soft_time_limit > self.time_limit:
            raise SettingsError("INTERLOCK_SOFT_TIME_LIMIT must not exceed INTERLOCK_TIME_LIMIT")
        if self.log_format not in {"text", "json"}:
            raise SettingsError("INTERLOCK_LOG_FORMAT must be 'text' or 'json'")
        if not 0 < self.queue_max_priority <= 255:
            raise SettingsError("INTERLOCK_QUEUE_MAX_PRIORITY must be between 1 and 255")
        if self.max_deliveries < 1:
            raise SettingsError("INTERLOCK_MAX_DELIVERIES must be at least 1")
        if self.queue_type not in {"classic", "quorum"}:
            raise SettingsError("INTERLOCK_QUEUE_TYPE must be 'classic' or 'quorum'")
        if self.uses_rabbitmq and not all(url.startswith(("amqp://", "amqps://")) for url in self.broker_urls):
            raise SettingsError("every URL in INTERLOCK_BROKER_URL must be an amqp:// or amqps:// URL")
        if self.otel_traces_exporter not in {"", "otlp", "console", "none"}:
            raise SettingsError("OTEL_TRACES_EXPORTER must be 'otlp', 'console' or 'none'")

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
    def broker_urls(self) -> tuple[str, ...]:
        """The broker URL, or each node's of a cluster (``;``-separated), in the order they are tried."""
        return tuple(url.strip() for url in self.broker_url.split(";") if url.strip())

    @property
    def llm_offline(self) -> bool:
        return not self.openai_api_key and not self.openai_base_url

    @property
    def traces_exporter(self) -> str:
        """Where spans go: ``otlp``, ``console``, or ``""`` when tracing is off (the default)."""
        if self.otel_endpoint:
            return "otlp"
        if self.otel_traces_exporter:
            return "" if self.otel_traces_exporter == "none" else self.otel_traces_exporter
        return "otlp" if self.otel_standard_endpoint else ""

    @property
    def traces_endpoint(self) -> str:
        """The OTLP/HTTP URL spans are posted to."""
        base = (self.otel_endpoint or self.otel_standard_endpoint or "http://localhost:4318").rstrip("/")
        return base if base.endswith("/v1/traces") else base + "/v1/traces"

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        return {f.metadata["env"]: f.metadata["syntax"].write(getattr(self, f.name)) for f in fields(self)}

    def __hash__(self) -> int:  # the maps are dicts; equal settings write the same environment
        return hash(tuple(self.to_env().items()))

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes``; a change given as text is read like its variable (``auth="off"``)."""
        return dataclasses.replace(self, **_read_text_values(changes))


def _read_text_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with text given for a typed field read in that field's syntax."""
    typed = {f.name: f.metadata for f in fields(Settings) if f.metadata["syntax"] is not TEXT}
    return {
        name: typed[name]["syntax"].read(value, typed[name]["env"])
        if name in typed and isinstance(value, str)
        else value
        for name, value in values.items()
    }


def setting_rows(settings: Settings | None = None) -> Iterator[tuple[str, str, str]]:
    """(variable, value-or-default, description) for every setting; secrets are masked."""
    shown = settings or Settings()
    for f in fields(Settings):
        text = f.metadata["syntax"].write(getattr(shown, f.name))
        if f.metadata["secret"] and text:
            text = "***"
        elif f.metadata["url"] and text:
            text = ";".join(mask_password(url) for url in text.split(";"))
        yield f.metadata["env"], text, f.metadata["help"]


def mask_password(url: str) -> str:
    """``scheme://user:***@host/path``: the URL with its password (if any) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL we can take apart: show nothing of it rather than a secret
        return "***"
    if not password:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))


def markdown_table() -> str:
    """The README's configuration table, generated so that it cannot drift from the code."""
    lines = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for name, default, help_text in setting_rows():
        shown = f"`{default}`" if default else "(empty)"
        lines.append(f"| `{name}` | {shown} | {help_text} |")
    return "\n".join(lines)
