"""The commands that call the HTTP API (at ``--url``, default ``INTERLOCK_API_URL``) with the CLI's key.

``submit`` (and ``--follow``), ``status``, ``result``, ``history``, ``resume``, ``cancel`` and
``dlq``, all through :class:`interlock.client.Client`: an answer is printed as JSON, an error
answer or an unreachable API as one line on stderr, exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from interlock.client import Client, ClientError, TaskError, TaskHandle
from interlock.settings import Settings

__all__ = ["run"]


def run(settings: Settings, args: argparse.Namespace) -> int:
    with Client(args.url or settings.api_url, settings.api_key or None) as client:
        try:
            return _run(client, args)
        except ClientError as exc:
            print(f"interlock: {exc}", file=sys.stderr)
            return 1


def _run(client: Client, args: argparse.Namespace) -> int:
    if args.command == "submit":
        return _submit(client, args)
    if args.command == "status":
        return _print(client.status(args.task_id).raw)
    if args.command == "result":
        return _result(client.task(args.task_id), args.timeout)
    if args.command == "history":
        return _print(client.history(args.workflow_id).raw)
    if args.command == "resume":
        return _print(client.resume(args.workflow_id).submitted.raw)
    if args.command == "cancel":
        return _print(client.cancel(args.task_id).raw)
    return _dlq(client, args)


def _submit(client: Client, args: argparse.Namespace) -> int:
    priority = int(args.priority) if args.priority and args.priority.isdigit() else args.priority
    task = client.submit(
        args.query,
        workflow=args.workflow,
        context=json.loads(args.context) if args.context else None,
        priority=priority,
        idempotency_key=args.idempotency_key,
    )
    if not args.follow:
        return _print(task.submitted.raw)
    print(f"task {task.task_id} {'(submitted before with this key) ' if task.replayed else ''}queued")
    return _follow(task)


def _follow(task: TaskHandle) -> int:
    """A line per change of state, progress or step, from the task's event stream; then its result."""
    last = None
    for event in task.stream():
        shown = (event.state, event.progress, event.step)
        if shown != last:
            bar = "#" * (event.progress // 5)
            print(f"[{bar:<20}] {event.progress:3d}% {event.state:<10} {event.step or ''}", flush=True)
            last = shown
    status = task.status()
    print(json.dumps(status.result if status.state == "SUCCESS" else {"error": status.error}, indent=2))
    return 0 if status.state == "SUCCESS" else 1


def _result(task: TaskHandle, timeout: float | None) -> int:
    try:
        return _print(task.result(timeout=timeout))
    except TaskError as exc:
        print(json.dumps({"task_id": exc.task_id, "state": exc.state, "error": exc.error}, indent=2))
        return 1


def _dlq(client: Client, args: argparse.Namespace) -> int:
    if args.action == "list":
        return _print({"queues": [queue.raw for queue in client.dead_letters(args.queue)]})
    if bool(args.task_id) == bool(args.queue):
        print(f"interlock: dlq {args.action} needs a task id or --queue (one of them)", file=sys.stderr)
        return 2
    if args.action == "replay":
        if args.task_id:
            return _print(client.replay(args.task_id).submitted.raw)
        return _print(client.replay_queue(args.queue).raw)
    if args.task_id:
        return _print(client.purge(args.task_id).raw)
    return _print(client.purge_queue(args.queue).raw)


def _print(value: Any) -> int:
    print(json.dumps(value, indent=2, default=str))
    return 0
