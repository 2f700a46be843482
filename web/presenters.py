"""The JSON shapes the API answers with, in one place: a field added here is added everywhere.

Each function turns a model row (or a dead letter) into the dict a responder hands to Falcon.
Short acknowledgements that only echo the request (``{"id": ..., "revoked": true}``) stay in
their resources. A circuit breaker's shape is ``models.breakers.breaker_view``: the workers'
``breakers`` tool returns it too, and workers do not import the web layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actors.dead_letters import DeadLetter
from models.base import iso
from models.checkpoints import FAILED, WorkflowCheckpoint
from models.events import Event
from models.security import ApiKey
from models.task_calls import CallUsage
from models.task_queries import TreeNode
from models.tasks import Task, TaskEvent, TaskState
from models.workers import WorkerProcess

from .timeline import call_cost

__all__ = [
    "task_status",
    "task_result",
    "task_event",
    "task_row",
    "task_details",
    "task_tree_view",
    "usage_view",
    "worker_view",
    "stream_event",
    "checkpoint_view",
    "workflow_history",
    "event_view",
    "event_summary",
    "dead_letter",
    "key_view",
]


# -- tasks ------------------------------------------------------------------------------------


def task_status(task: Task, *, children: list[Task] | None = None) -> dict[str, Any]:
    """The public JSON shape of a task (``/agent/status``, the dashboard, ``?wait=`` answers)."""
    body: dict[str, Any] = {
        "task_id": task.id,
        "workflow": task.workflow,
        "queue": task.queue,
        "state": task.state,
        "progress": task.progress,
        "current_step": task.current_step,
        "attempts": task.attempts,
        "created_at": iso(task.created_at),
        "started_at": iso(task.started_at),
        "finished_at": iso(task.finished_at),
        "updated_at": iso(task.updated_at),
    }
    if task.state == TaskState.SUCCESS:
        body["result"] = task.result
    elif task.error is not None:
        body["error"] = task.error
    # A coordinator's own progress already moves with its children's (``ctx.gather(progress_to=...)``):
    # an average taken here would fall each time a child is added.
    if children is not None:
        body["children"] = [
            {"task_id": c.id, "agent": c.workflow, "state": c.state, "progress": c.progress} for c in children
        ]
    return body


def task_row(task: Task, query: str | None) -> dict[str, Any]:
    """A row of the dashboard's task list: no result, error or input, only the start of the query."""
    return {
        "task_id": task.id,
        "workflow": task.workflow,
        "state": task.state,
        "progress": task.progress,
        "current_step": task.current_step,
        "attempts": task.attempts,
        "tenant": task.tenant,
        "parent_id": task.parent_id,
        "query": query,
        "created_at": iso(task.created_at),
        "started_at": iso(task.started_at),
        "finished_at": iso(task.finished_at),
        "updated_at": iso(task.updated_at),
    }


def task_details(task: Task) -> dict[str, Any]:
    """The task's page: its status with what the status leaves out (input, tenant, parent, error)."""
    body = task_status(task)
    body.update(
        {
            "input": task.input,
            "tenant": task.tenant,
            "parent_id": task.parent_id,
            "priority": task.priority,
            "error": task.error,
        }
    )
    return body


def usage_view(usage: Mapping[str, CallUsage], prices: Mapping[str, tuple[float, float]]) -> dict[str, Any]:
    """LLM calls, tokens and estimated cost (``None`` when a model has no price) of one task."""
    costs = [call_cost(prices, model, u.prompt_tokens, u.completion_tokens) for model, u in usage.items()]
    prompt = sum(u.prompt_tokens for u in usage.values())
    completion = sum(u.completion_tokens for u in usage.values())
    return {
        "llm_calls": sum(u.calls for u in usage.values()),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cost_usd": None if None in costs else round(sum(c for c in costs if c is not None), 8),
    }


def task_tree_view(
    nodes: list[TreeNode], usage: Mapping[str, Mapping[str, CallUsage]], prices: Mapping[str, tuple[float, float]]
) -> list[dict[str, Any]]:
    """The tasks below one task as nested lists (``nodes`` from ``task_tree``), each with its LLM usage."""
    views: dict[str, dict[str, Any]] = {}
    for node in nodes:
        views[node.task_id] = {
            "task_id": node.task_id,
            "workflow": node.workflow,
            "state": node.state,
            "progress": node.progress,
            "current_step": node.current_step,
            "created_at": iso(node.created_at),
            "started_at": iso(node.started_at),
            "finished_at": iso(node.finished_at),
            "usage": usage_view(usage.get(node.task_id, {}), prices),
            "children": [],
        }
    roots: list[dict[str, Any]] = []
    for node in nodes:
        parent = views.get(node.parent_id or "")
        (parent["children"] if parent is not None else roots).append(views[node.task_id])
    return roots


def worker_view(worker: WorkerProcess) -> dict[str, Any]:
    """A worker process as the dashboard lists it (from its last heartbeat)."""
    queues = worker.queues.get("names") if isinstance(worker.queues, dict) else None
    return {
        "id": worker.id,
        "host": worker.host,
        "pid": worker.pid,
        "queues": list(queues or []),
        "threads": worker.threads,
        "in_flight": worker.in_flight,
        "tasks_done": worker.tasks_done,
        "started_at": iso(worker.started_at),
        "heartbeat_at": iso(worker.heartbeat_at),
        "stopped_at": iso(worker.stopped_at),
    }


def task_result(task: Task) -> dict[str, Any]:
    """``/agent/result``: the result, the error, or how far the task got (it answers 202 then)."""
    if task.state == TaskState.SUCCESS:
        return {"task_id": task.id, "status": "complete", "result": task.result}
    if task.state in (TaskState.FAILURE, TaskState.CANCELLED):
        return {"task_id": task.id, "status": "failed", "state": task.state, "error": task.error}
    return {"task_id": task.id, "status": "not_ready", "state": task.state, "progress": task.progress}


def task_event(event: TaskEvent) -> dict[str, Any]:
    """One event of a task's log, as the dashboard reads it."""
    return {
        "id": event.id,
        "kind": event.kind,
        "state": event.state,
        "progress": event.progress,
        "step": event.step,
        "data": event.data,
        "created_at": iso(event.created_at),
    }


def stream_event(event: TaskEvent) -> dict[str, Any]:
    """The ``data:`` of an ``/agent/stream`` event (its id and kind are the SSE ``id`` and ``event``)."""
    return {
        "state": event.state,
        "progress": event.progress,
        "step": event.step,
        "data": event.data,
        "created_at": iso(event.created_at),
    }


# -- workflows --------------------------------------------------------------------------------


def checkpoint_view(checkpoint: WorkflowCheckpoint) -> dict[str, Any]:
    body: dict[str, Any] = {
        "stage": checkpoint.stage,
        "state": checkpoint.status,
        "created_at": iso(checkpoint.created_at),
        "updated_at": iso(checkpoint.updated_at),
        "duration_ms": checkpoint.duration_ms,
    }
    if checkpoint.status == FAILED and checkpoint.error:
        body["error"] = checkpoint.error
        if checkpoint.meta.get("traceback"):
            body["traceback"] = checkpoint.meta["traceback"]
    if checkpoint.meta.get("failures"):
        body["failures"] = checkpoint.meta["failures"]
    return body


def workflow_history(task: Task, checkpoints: list[WorkflowCheckpoint]) -> dict[str, Any]:
    """``/agent/history``: the workflow's state and its checkpoints, oldest first."""
    return {
        "workflow_id": task.id,
        "workflow": task.workflow,
        "state": task.state,
        "checkpoints": [checkpoint_view(c) for c in checkpoints],
    }


# -- events -----------------------------------------------------------------------------------


def event_view(event: Event) -> dict[str, Any]:
    """The public JSON shape of an event (``/events``)."""
    return {
        "event_id": event.id,
        "type": event.type,
        "source": event.source,
        "data": event.data,
        "task_ids": list(event.task_ids or []),
        "published_by": event.published_by,
        "tenant": event.tenant,
        "created_at": iso(event.created_at),
        "expires_at": iso(event.expires_at),
    }


def event_summary(event: Event) -> dict[str, Any]:
    """An event in the dashboard's overview."""
    return {
        "id": event.id,
        "type": event.type,
        "source": event.source,
        "tasks": len(event.task_ids),
        "at": iso(event.created_at),
    }


# -- dead letters and keys --------------------------------------------------------------------


def dead_letter(letter: DeadLetter, task: Task | None) -> dict[str, Any]:
    """A dead-lettered message with what its task row says (``None``: the row is gone)."""
    return {
        "task_id": letter.task_id,
        "actor": letter.actor,
        "message_id": letter.message_id,
        "attempts": task.attempts if task else None,
        "state": task.state if task else None,
        "error": task.error if task else None,
        "dead_at": iso(letter.dead_at or (task.finished_at if task else None)),
    }


def key_view(record: ApiKey) -> dict[str, Any]:
    """An API key as ``/keys`` and ``interlock keys`` show it (never the key itself: only its hash is kept)."""
    return {
        "id": record.id,
        "tenant": record.tenant,
        "scopes": list(record.scopes),
        "created_at": iso(record.created_at),
        "revoked_at": iso(record.revoked_at),
        "last_used_at": iso(record.last_used_at),
    }
