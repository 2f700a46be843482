"""The ``interlock`` command. Thin: it reads settings once and starts the right component."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from .settings import Settings, SettingsError, setting_rows

__all__ = ["main"]

SETTINGS_NOTE = (
    "Reads INTERLOCK_* settings from the environment (see `interlock config`), "
    "e.g. INTERLOCK_DATABASE_URL and INTERLOCK_BROKER_URL."
)


def _parser() -> argparse.ArgumentParser:
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
    config.add_argument("--markdown", action="store_true", help="print the README's table of settings and defaults")

    client_note = "Talks to the API at --url (default INTERLOCK_API_URL)."
    submit = sub.add_parser("submit", help="submit a query", description=client_note)
    submit.add_argument("query")
    submit.add_argument("--workflow", default=None)
    submit.add_argument("--context", default=None, help="JSON object")
    submit.add_argument("--priority", default=None)
    submit.add_argument("--follow", action="store_true", help="show progress until the task ends")
    submit.add_argument("--url", default=None)

    status = sub.add_parser("status", help="show a task's status", description=client_note)
    status.add_argument("task_id")
    status.add_argument("--url", default=None)

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
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"interlock: configuration error: {exc}", file=sys.stderr)
        return 2
    handler = globals()[f"_cmd_{args.command}"]
    try:
        return int(handler(settings, args) or 0)
    except SettingsError as exc:  # e.g. a schedule that is not one, found when the scheduler starts
        print(f"interlock: configuration error: {exc}", file=sys.stderr)
        return 2


def _cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    if args.markdown:
        from .settings import markdown_table

        print(markdown_table())
        return 0
    width = max(len(name) for name, _, _ in setting_rows())
    for name, value, help_text in setting_rows(settings):
        print(f"{name:<{width}}  {value or '(empty)'}")
        print(f"{'':<{width}}  {help_text}")
    return 0


def _cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from .migrations import check, upgrade

    if args.check:
        ok, detail = check(settings)
        print(detail)
        return 0 if ok else 1
    upgrade(settings)
    print("database schema is at head")
    return 0


def _cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    from .dev import run_dev

    if "INTERLOCK_AUTH" not in os.environ:  # development default; an explicit INTERLOCK_AUTH is honoured
        settings = settings.replace(auth="off")

    return run_dev(settings, host=args.host, port=args.port, threads=args.threads or settings.worker_threads)


def _cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    workers = args.workers or settings.api_workers
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        args.bind,
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        str(settings.api_threads),
        "--access-logfile",
        "-",
        "web.wsgi:get_app()",
    ]
    os.execvp(command[0], command)  # noqa: S606 - replace this process with gunicorn
    return 0  # pragma: no cover


def _cmd_scheduler(settings: Settings, args: argparse.Namespace) -> int:
    from .logs import configure_logging
    from .scheduler import run_scheduler

    configure_logging(settings.log_level, settings.log_format)
    return run_scheduler(settings)


def _cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from .logs import configure_logging
    from .settings import parse_pairs
    from .worker import Supervisor

    configure_logging(settings.log_level, settings.log_format)
    threads = args.threads
    if threads is None and args.queues:
        # Serving named queues: as many threads as their configured concurrency adds up to.
        concurrency = {name: int(value) for name, value in parse_pairs(settings.agent_concurrency).items()}
        threads = sum(concurrency.get(queue, settings.worker_threads) for queue in args.queues)
    supervisor = Supervisor(
        settings,
        queues=args.queues,
        processes=args.processes or settings.worker_processes,
        threads=threads or settings.worker_threads,
    )
    return supervisor.run()


def _cmd_submit(settings: Settings, args: argparse.Namespace) -> int:
    from .client import ApiError, Client

    client = Client(args.url or settings.api_url, api_key=settings.api_key or None)
    body: dict[str, Any] = {"query": args.query}
    if args.workflow:
        body["workflow"] = args.workflow
    if args.context:
        body["context"] = json.loads(args.context)
    if args.priority:
        body["priority"] = int(args.priority) if args.priority.isdigit() else args.priority
    try:
        answer = client.submit(body)
    except ApiError as exc:
        print(f"interlock: {exc}", file=sys.stderr)
        return 1
    if not args.follow:
        print(json.dumps(answer, indent=2))
        return 0
    print(f"task {answer['task_id']} queued")
    return _follow(client, answer["task_id"])


def _follow(client: Any, task_id: str) -> int:
    last = None
    while True:
        status = client.status(task_id)
        shown = (status["state"], status["progress"], status.get("current_step"))
        if shown != last:
            bar = "#" * (status["progress"] // 5)
            print(f"\r[{bar:<20}] {status['progress']:3d}% {status['state']:<10} {status.get('current_step') or ''}")
            last = shown
        if status["state"] in {"SUCCESS", "FAILURE", "CANCELLED"}:
            print(json.dumps(status.get("result") or {"error": status.get("error")}, indent=2))
            return 0 if status["state"] == "SUCCESS" else 1
        time.sleep(0.3)


def _cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    return _print_call(lambda client: client.status(args.task_id), settings, args)


def _cmd_history(settings: Settings, args: argparse.Namespace) -> int:
    return _print_call(lambda client: client.history(args.workflow_id), settings, args)


def _cmd_resume(settings: Settings, args: argparse.Namespace) -> int:
    return _print_call(lambda client: client.resume(args.workflow_id), settings, args)


def _cmd_cancel(settings: Settings, args: argparse.Namespace) -> int:
    return _print_call(lambda client: client.cancel(args.task_id), settings, args)


def _cmd_dlq(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "list":
        return _print_call(lambda client: client.dead_letters(args.queue), settings, args)
    if bool(args.task_id) == bool(args.queue):
        print(f"interlock: dlq {args.action} needs a task id or --queue (one of them)", file=sys.stderr)
        return 2
    if args.action == "replay":
        return _print_call(lambda client: client.replay(args.task_id, queue=args.queue), settings, args)
    return _print_call(lambda client: client.purge(args.task_id, queue=args.queue), settings, args)


def _cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    from actors.runtime import Runtime
    from models.security import create_key, list_keys, revoke_key
    from web.presenters import key_view

    runtime = Runtime.open(settings)
    try:
        with runtime.sessions.begin() as session:
            if args.keys_action == "create":
                try:
                    new = create_key(session, tenant=args.tenant, scopes=args.scope.replace(" ", "").split(","))
                except ValueError as exc:
                    print(f"interlock: {exc}", file=sys.stderr)
                    return 2
                session.flush()
                view = {**key_view(new.record), "key": new.key}
                if args.json:
                    print(json.dumps(view))
                else:
                    print(f"key {view['id']} for tenant {view['tenant']} ({', '.join(view['scopes'])}):")
                    print(f"  {new.key}")
                    print("It is shown only now: store it safely.")
            elif args.keys_action == "list":
                views = [key_view(k) for k in list_keys(session, tenant=args.tenant)]
                if args.json:
                    print(json.dumps(views))
                for v in [] if args.json else views:
                    state = f"revoked {v['revoked_at']}" if v["revoked_at"] else "active"
                    print(f"{v['id']}  {v['tenant']:<16} {','.join(v['scopes']):<24} {v['created_at']}  {state}")
            elif not revoke_key(session, args.key_id):
                print(f"interlock: no active key has the id {args.key_id}", file=sys.stderr)
                return 1
            else:
                print(f"key {args.key_id} revoked")
    finally:
        runtime.close()
    return 0


def _cmd_tenants(settings: Settings, args: argparse.Namespace) -> int:
    from actors.runtime import Runtime
    from models.tenants import get_limits, list_limits, set_limits

    runtime = Runtime.open(settings)
    try:
        with runtime.sessions.begin() as session:
            if args.tenants_action == "list":
                print(json.dumps(list_limits(session), indent=2))
                return 0
            current = get_limits(session, args.name)
            concurrency = current.max_concurrency if current else None
            tokens = current.monthly_tokens if current else None
            if args.max_concurrency is not None:
                concurrency = args.max_concurrency or None
            if args.monthly_tokens is not None:
                tokens = args.monthly_tokens or None
            if (concurrency or 0) < 0 or (tokens or 0) < 0:
                print("interlock: limits must not be negative", file=sys.stderr)
                return 2
            set_limits(session, args.name, max_concurrency=concurrency, monthly_tokens=tokens)
            print(json.dumps({"tenant": args.name, "max_concurrency": concurrency, "monthly_tokens": tokens}))
    finally:
        runtime.close()
    return 0


def _print_call(call: Any, settings: Settings, args: argparse.Namespace) -> int:
    from .client import ApiError, Client

    try:
        print(json.dumps(call(Client(args.url or settings.api_url, api_key=settings.api_key or None)), indent=2))
    except ApiError as exc:
        print(f"interlock: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
