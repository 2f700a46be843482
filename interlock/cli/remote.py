"""The commands that call the HTTP API (at ``--url``, default ``INTERLOCK_API_URL``) with the CLI's key.

``submit`` (and ``--follow``), ``status``, ``history``, ``resume``, ``cancel`` and ``dlq``: an
answer is printed as JSON, an error answer or an unreachable API as one line on stderr, exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from interlock.settings import Settings

from .client import ApiError, Client

__all__ = ["run"]


def run(settings: Settings, args: argparse.Namespace) -> int:
    client = Client(args.url or settings.api_url, api_key=settings.api_key or None)
    if args.command == "submit":
        return _submit(client, args)
    if args.command == "status":
        return _print_call(lambda: client.status(args.task_id))
    if args.command == "history":
        return _print_call(lambda: client.history(args.workflow_id))
    if args.command == "resume":
        return _print_call(lambda: client.resume(args.workflow_id))
    if args.command == "cancel":
        return _print_call(lambda: client.cancel(args.task_id))
    return _dlq(client, args)


def _submit(client: Client, args: argparse.Namespace) -> int:
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


def _follow(client: Client, task_id: str) -> int:
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


def _dlq(client: Client, args: argparse.Namespace) -> int:
    if args.action == "list":
        return _print_call(lambda: client.dead_letters(args.queue))
    if bool(args.task_id) == bool(args.queue):
        print(f"interlock: dlq {args.action} needs a task id or --queue (one of them)", file=sys.stderr)
        return 2
    if args.action == "replay":
        return _print_call(lambda: client.replay(args.task_id, queue=args.queue))
    return _print_call(lambda: client.purge(args.task_id, queue=args.queue))


def _print_call(call: Callable[[], Any]) -> int:
    try:
        print(json.dumps(call(), indent=2))
    except ApiError as exc:
        print(f"interlock: {exc}", file=sys.stderr)
        return 1
    return 0
