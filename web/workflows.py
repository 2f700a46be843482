"""Checkpoint history and resume of workflows (a workflow's id is its task id)."""

from __future__ import annotations

from collections.abc import Mapping

import dramatiq
import falcon
from sqlalchemy.orm import Session, sessionmaker

from actors.catalogue import WorkflowSpec
from actors.errors import NotResumable, UnknownTask
from actors.submit import resume
from models.checkpoints import checkpoint_view, load_checkpoints

from .tasks import load_task

__all__ = ["HistoryResource", "ResumeResource"]


class HistoryResource:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def on_get(self, req: falcon.Request, resp: falcon.Response, workflow_id: str) -> None:
        task, _ = load_task(self.sessions, workflow_id)
        with self.sessions() as session:
            checkpoints = [checkpoint_view(c) for c in load_checkpoints(session, workflow_id)]
        resp.media = {
            "workflow_id": workflow_id,
            "workflow": task.workflow,
            "state": task.state,
            "checkpoints": checkpoints,
        }


class ResumeResource:
    def __init__(
        self, sessions: sessionmaker[Session], broker: dramatiq.Broker, catalogue: Mapping[str, WorkflowSpec]
    ) -> None:
        self.sessions = sessions
        self.broker = broker
        self.catalogue = catalogue

    def on_post(self, req: falcon.Request, resp: falcon.Response, workflow_id: str) -> None:
        try:
            task, stage = resume(self.sessions, self.broker, self.catalogue, workflow_id)
        except UnknownTask as exc:
            raise falcon.HTTPNotFound(
                title="Unknown workflow", description=f"No workflow has the id {workflow_id!r}."
            ) from exc
        except NotResumable as exc:
            raise falcon.HTTPConflict(title="Workflow cannot be resumed", description=str(exc)) from exc
        resp.status = falcon.HTTP_202
        resp.location = f"/agent/status/{task.id}"
        resp.media = {
            "task_id": task.id,
            "status": "queued",
            "resumed_from_stage": stage,
            "status_url": f"/agent/status/{task.id}",
        }
