"""The ``interlock`` command's arguments, and the dispatch to the module of ``interlock.cli`` that runs one.

Thin: it reads the settings once and hands them to the subcommand's ``run(settings, args)``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Mapping, Sequence

from interlock.settings import Settings, SettingsError

__all__ = ["main", "build_parser", "COMMANDS"]

#: Subcommand -> the module of ``interlock.cli`` whose ``run(settings, args)`` carries it out.
COMMANDS: Mapping[str, str] = {
    "dev": "dev",
    "api": "api",
    "worker": "worker",
    "scheduler": "scheduler",
    "migrate": "migrate",
    "config": "config",
    "submit": "remote",
    "status": "remote",
    "result": "remote",
    "history": "remote",
    "resume": "remote",
    "cancel": "remote",
    "dlq": "remote",
    "keys": "keys",
    "tenants": "tenants",
}

SETTINGS_NOTE = (
    "Reads INTERLOCK_* settings from the environment (see `interlock config`), "
    "e.g. INTERLOCK_DATABASE_URL and INTERLOCK_BROKER_URL."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interlock", description="Durable asynchronous AI-agent work.")
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="API + worker + scheduler in one process", description=SETTINGS_NOTE)
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--threads", type=int, default=None, help="worker threads (default INTERLOCK_WORKER_THREADS)")

    api = sub.add_parser("api", help="serve the HTTP API with gunicorn", description=SETTINGS_NOTE)
    api.add_argument("--bind", default="127.0.0.1:8000")
    api.add_argument("--workers", type=int, default=None, help="default INTERLOCK_API_WORKERS")

    worker = sub.add_parser("worker", help="run worker processes", description=SETTINGS_NOTE)
    worker.add_argument("--queues", nargs="*", default=None, help="queues to serve (default: all)")
    worker.add_argument("--processes", type=int, default=None, help="default INTERLOCK_WORKER_PROCESSES")
    worker.add_argument("--threads", type=int, default=None, help="default INTERLOCK_WORKER_THREADS")

    sub.add_parser(
        "scheduler",
        help="enqueue the periodic jobs (run two or more for availability; each slot runs once)",
        description=SETTINGS_NOTE + " Schedules: INTERLOCK_SCHEDULE_MONITOR_DATA_SOURCES, "
        "INTERLOCK_SCHEDULE_CLEANUP_OLD_EVENTS, INTERLOCK_SCHEDULE_HEALTH_CHECK.",
    )

    migrate = sub.add_parser("migrate", help="upgrade the database schema to head", description=SETTINGS_NOTE)
    migrate.add_argument("--check", action="store_true", help="exit 1 if the database is behind the code")

    config = sub.add_parser("config", help="print every setting with its current value", description=SETTINGS_NOTE)
    config.add_argument(
        "--markdown", action="store_true", help="print the table of settings and defaults in docs/configuration.md"
    )

    client_note = "Talks to the API at --url (default INTERLOCK_API_URL)."
    submit = sub.add_parser("submit", help="submit a query", description=client_note)
    submit.add_argument("query")
    submit.add_argument("--workflow", default=None)
    submit.add_argument("--context", default=None, help="JSON object")
    submit.add_argument("--priority", default=None)
    submit.add_argument("--follow", action="store_true", help="show progress until the task ends")
    submit.add_argument(
        "--idempotency-key", default=None, help="the same key (and query) within 24 h answers the first task"
    )
    submit.add_argument("--url", default=None)

    status = sub.add_parser("status", help="show a task's status", description=client_note)
    status.add_argument("task_id")
    status.add_argument("--url", default=None)

    result = sub.add_parser(
        "result", help="wait for a task to end and print its result (exit 1 if it failed)", description=client_note
    )
    result.add_argument("task_id")
    result.add_argument("--timeout", type=float, default=None, help="seconds to wait at most (default: no limit)")
    result.add_argument("--url", default=None)

    history = sub.add_parser("history", help="show a workflow's checkpoints", description=client_note)
    history.add_argument("workflow_id")
    history.add_argument("--url", default=None)

    resume = sub.add_parser("resume", help="resume a failed workflow at its failed stage", description=client_note)
    resume.add_argument("workflow_id")
    resume.add_argument("--url", default=None)

    cancel = sub.add_parser("cancel", help="cancel a task and its child tasks", description=client_note)
    cancel.add_argument("task_id")
    cancel.add_argument("--url", default=None)

    dlq = sub.add_parser("dlq", help="list, replay or purge dead-lettered tasks", description=client_note)
    dlq.add_argument("action", choices=["list", "replay", "purge"])
    dlq.add_argument("task_id", nargs="?", default=None, help="one task (replay/purge)")
    dlq.add_argument("--queue", default=None, help="a work queue (list: filter; replay/purge: all of it)")
    dlq.add_argument("--url", default=None)

    keys = sub.add_parser(
        "keys", help="create, list or revoke API keys (in the database directly)", description=SETTINGS_NOTE
    )
    keys_sub = keys.add_subparsers(dest="keys_action", required=True)
    create = keys_sub.add_parser("create", help="create a key; it is shown once and stored only as a hash")
    create.add_argument("--tenant", required=True)
    create.add_argument("--scope", default="submit,read", help="comma-separated: submit, read, admin, metrics")
    create.add_argument("--json", action="store_true", help="print one JSON object")
    listing = keys_sub.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--tenant", default=None)
    listing.add_argument("--json", action="store_true")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")

    tenants = sub.add_parser("tenants", help="per-tenant concurrency caps and monthly token budgets")
    tenants_sub = tenants.add_subparsers(dest="tenants_action", required=True)
    limit = tenants_sub.add_parser("set", help="set a tenant's limits (0 removes one)")
    limit.add_argument("name")
    limit.add_argument("--max-concurrency", type=int, default=None, help="tasks running at once (0: no cap)")
    limit.add_argument("--monthly-tokens", type=int, default=None, help="LLM tokens per month (0: no budget)")
    tenants_sub.add_parser("list", help="limits and this month's token use")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"interlock: configuration error: {exc}", file=sys.stderr)
        return 2
    # Only the module of the command that runs is imported: the worker's stack (Dramatiq, the
    # OpenAI client, Falcon) takes seconds to import, which `interlock status` should not pay.
    command = importlib.import_module(f"{__package__}.{COMMANDS[args.command]}")
    try:
        return int(command.run(settings, args) or 0)
    except SettingsError as exc:  # e.g. a schedule that is not one, found when the scheduler starts
        print(f"interlock: configuration error: {exc}", file=sys.stderr)
        return 2
