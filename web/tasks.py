"""Submission, status and result of tasks: the reference article's paths, durable underneath."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import dramatiq
import falcon
from sqlalchemy.orm import Session, sessionmaker

from actors.catalogue import WorkflowSpec
from actors.submit import Idempotency, Submission, resolve_priority, submit_once
from interlock import tracing
from models.task_queries import child_tasks, get_task
from models.tasks import TERMINAL_STATES, Task

from .auth import tenant_of
from .presenters import task_result, task_status
from .schemas import EXECUTE_REQUEST
from .stream import wait_for_end
from .validation import validate

__all__ = ["SubmitResource", "ExecuteResource", "StatusResource", "ResultResource", "load_task"]

MAX_WAIT_SECONDS = 30
MAX_IDEMPOTENCY_KEY = 255


def load_task(sessions: sessionmaker[Session], task_id: str) -> tuple[Task, list[Task]]:
    with sessions() as session:
        task = get_task(session, task_id) if len(task_id) <= 36 else None
        if task is None:
            raise falcon.HTTPNotFound(title="Unknown task", description=f"No task has the id {task_id!r}.")
        return task, child_tasks(session, task_id)


class SubmitResource:
    """Shared by the routes that submit work: the dependencies, the submission and the 202 answer."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        broker: dramatiq.Broker,
        catalogue: Mapping[str, WorkflowSpec],
        max_priority: int,
    ) -> None:
        self.sessions = sessions
        self.broker = broker
        self.catalogue = catalogue
        self.max_priority = max_priority

    def submit(
        self,
        req: falcon.Request,
        workflow: str,
        input: dict[str, Any],
        priority: str | int | None,
        idempotency: Idempotency | None = None,
    ) -> Submission:
        # The submission's span starts the task's trace (or joins the caller's, from its traceparent);
        # the task's message carries its context to the worker.
        with tracing.span(
            f"{req.method} {req.uri_template}",
            {"http.request.method": req.method, "http.route": req.uri_template, "interlock.workflow": workflow},
            parent=req.get_header("traceparent"),
            kind="server",
        ) as span:
            submission = submit_once(
                self.sessions,
                self.broker,
                self.catalogue,
                workflow=workflow,
                input=input,
                priority=resolve_priority(priority, max_priority=self.max_priority),
                tenant=tenant_of(req),
                idempotency=idempotency,
            )
            span.set({"interlock.task_id": submission.task.id, "interlock.replayed": submission.replayed})
        return submission

    @staticmethod
    def accepted(resp: falcon.Response, task: Task, *, replayed: bool = False, **extra: Any) -> None:
        status_url = f"/agent/status/{task.id}"
        resp.status = falcon.HTTP_200 if replayed else falcon.HTTP_202
        resp.location = status_url
        resp.media = {"task_id": task.id, "status": "queued", **extra, "status_url": status_url}


class ExecuteResource(SubmitResource):
    @validate(req_schema=EXECUTE_REQUEST)
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body: dict[str, Any] = req.get_media()
        wait = _wait_seconds(req)
        workflow = body.get("workflow", "agent")
        spec = self.catalogue.get(workflow)
        if spec is None or not spec.submittable:
            known = sorted(name for name, s in self.catalogue.items() if s.submittable)
            raise falcon.HTTPBadRequest(
                title="Unknown workflow",
                description=f"Workflow {workflow!r} does not exist. Known workflows: {', '.join(known)}.",
            )
        submission = self.submit(
            req,
            workflow,
            {"query": body["query"], "context": body.get("context") or {}},
            body.get("priority"),
            _idempotency(req, body),
        )
        task = submission.task
        if not submission.replayed:
            req.context.submitted_workflow = workflow  # counted by web.metrics
        finished = wait_for_end(self.sessions, task.id, wait) if wait else None
        if finished is not None:
            resp.location = f"/agent/status/{task.id}"
            resp.media = finished
            return
        self.accepted(resp, task, replayed=submission.replayed, message=f"Workflow {workflow!r} accepted")


def _idempotency(req: falcon.Request, body: dict[str, Any]) -> Idempotency | None:
    """The ``Idempotency-Key`` header with a hash of the canonical body, or ``None``."""
    key = req.get_header("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not key.isprintable() or not key.isascii():
        raise falcon.HTTPBadRequest(
            title="Invalid Idempotency-Key",
            description=f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters.",
        )
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return Idempotency(key, hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest())


def _wait_seconds(req: falcon.Request) -> float:
    """``?wait=N``: answer with the finished task if it ends within N seconds (0 < N <= 30)."""
    raw = req.get_param("wait")
    if raw is None:
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not 0 < wait <= MAX_WAIT_SECONDS:
        raise falcon.HTTPBadRequest(
            title="Invalid wait",
            description=f"wait must be a number of seconds greater than 0 and at most {MAX_WAIT_SECONDS}.",
        )
    return wait


class StatusResource:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def on_get(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        task, children = load_task(self.sessions, task_id)
        resp.media = task_status(task, children=children)


class ResultResource:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def on_get(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        """The result, the error, or how far the task got; ``?wait=N`` answers when it ends within N seconds."""
        wait = _wait_seconds(req)
        task, _ = load_task(self.sessions, task_id)
        if wait and task.state not in TERMINAL_STATES:
            wait_for_end(self.sessions, task_id, wait)
            task, _ = load_task(self.sessions, task_id)
        if task.state not in TERMINAL_STATES:
            resp.status = falcon.HTTP_202
        resp.media = task_result(task)
