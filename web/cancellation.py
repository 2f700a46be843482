"""``POST /agent/cancel/{task_id}``: stop a task and its children."""

from __future__ import annotations

import falcon
from sqlalchemy.orm import Session, sessionmaker

from actors.cancellation import CancelOutcome, cancel_task

__all__ = ["CancelResource"]


class CancelResource:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def on_post(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        if len(task_id) > 36:
            raise falcon.HTTPNotFound(title="Unknown task", description=f"No task has the id {task_id!r}.")
        with self.sessions.begin() as session:
            cancellation = cancel_task(session, task_id)
        if cancellation.outcome is CancelOutcome.MISSING:
            raise falcon.HTTPNotFound(title="Unknown task", description=f"No task has the id {task_id!r}.")
        if cancellation.outcome is CancelOutcome.FINISHED:
            raise falcon.HTTPConflict(
                title="Task already finished",
                description=f"Task {task_id} ended {cancellation.state}; only unfinished tasks can be cancelled.",
            )
        resp.status = falcon.HTTP_202
        resp.location = f"/agent/status/{task_id}"
        resp.media = {
            "task_id": task_id,
            "state": cancellation.outcome.value,
            "children_cancelled": list(cancellation.children),
            "status_url": f"/agent/status/{task_id}",
        }
