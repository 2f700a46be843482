"""Dead-lettered tasks: ``GET /dlq``, replay and purge, one task or a whole queue.

A system operator (authentication off, or an admin key of the ``system`` tenant) sees and acts on
every dead letter. A tenant's admin sees and acts on its own tenant's only: a queue-wide purge or
replay takes that tenant's letters and leaves every other one in its place, in order; another
tenant's task id (or a letter whose task is gone) answers as if it were not there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dramatiq
import falcon
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from actors.catalogue import WorkflowSpec
from actors.dead_letters import (
    DeadLetter,
    list_dead_letters,
    purge,
    replay_task,
    take_dead_letters,
    task_details,
)
from actors.errors import DeadLetterError
from models.base import iso
from models.tasks import Task

from .auth import tenant_of, visible_tenants

__all__ = ["DeadLettersResource", "DeadLetterResource", "ReplayResource", "ReplayQueueResource"]


class _Owner:
    """Whose dead letters the caller may touch: all of them (an operator) or its tenant's."""

    def __init__(self, sessions: sessionmaker[Session], req: falcon.Request) -> None:
        self.sessions = sessions
        self.tenant = None if visible_tenants(req) is None else tenant_of(req)
        self._tenants: dict[str, str | None] = {}

    def owns(self, letter: DeadLetter) -> bool:
        if self.tenant is None:
            return True
        task_id = letter.task_id
        if task_id is None or len(task_id) > 36:
            return False
        if task_id not in self._tenants:
            with self.sessions() as session:
                self._tenants[task_id] = session.scalar(select(Task.tenant).where(Task.id == task_id))
        return self._tenants[task_id] == self.tenant


class _Base:
    def __init__(
        self, sessions: sessionmaker[Session], broker: dramatiq.Broker, catalogue: Mapping[str, WorkflowSpec]
    ) -> None:
        self.sessions = sessions
        self.broker = broker
        self.queues = sorted({spec.queue for spec in catalogue.values()})

    def _queues(self, req: falcon.Request, *, required: bool = False) -> list[str]:
        queue = req.get_param("queue")
        if queue is None:
            if required:
                raise falcon.HTTPBadRequest(title="Missing queue", description="Name the queue with ?queue=NAME.")
            return self.queues
        if queue not in self.queues:
            raise falcon.HTTPBadRequest(
                title="Unknown queue", description=f"Queue {queue!r} does not exist. Known: {', '.join(self.queues)}."
            )
        return [queue]

    def _unavailable(self, exc: DeadLetterError) -> falcon.HTTPServiceUnavailable:
        return falcon.HTTPServiceUnavailable(title="Broker unavailable", description=str(exc), retry_after=5)


class DeadLettersResource(_Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            letters = list_dead_letters(self.broker, self._queues(req))
        except DeadLetterError as exc:
            raise self._unavailable(exc) from exc
        tenant = None if visible_tenants(req) is None else tenant_of(req)
        with self.sessions() as session:
            tasks = task_details(session, (m.task_id or "" for ms in letters.values() for m in ms))
            queues: list[dict[str, Any]] = []
            for queue, messages in letters.items():
                rows = []
                for letter in messages:
                    task = tasks.get(letter.task_id or "")
                    if tenant is not None and (task is None or task.tenant != tenant):
                        continue  # another tenant's dead letter, or one nobody owns: for the operator
                    rows.append(
                        {
                            "task_id": letter.task_id,
                            "actor": letter.actor,
                            "message_id": letter.message_id,
                            "attempts": task.attempts if task else None,
                            "state": task.state if task else None,
                            "error": task.error if task else None,
                            "dead_at": iso(letter.dead_at or (task.finished_at if task else None)),
                        }
                    )
                queues.append({"queue": queue, "messages": rows})
        resp.media = {"queues": queues}

    def on_delete(self, req: falcon.Request, resp: falcon.Response) -> None:
        queues = self._queues(req, required=True)
        owner = _Owner(self.sessions, req)
        try:
            purged = purge(self.broker, queues, allowed=owner.owns)
        except DeadLetterError as exc:
            raise self._unavailable(exc) from exc
        resp.media = {"queue": queues[0], "purged": len(purged), "task_ids": [p.task_id for p in purged]}


class DeadLetterResource(_Base):
    def on_delete(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        owner = _Owner(self.sessions, req)
        try:
            purged = purge(self.broker, self.queues, task_id, allowed=owner.owns)
        except DeadLetterError as exc:
            raise self._unavailable(exc) from exc
        if not purged:
            raise falcon.HTTPNotFound(title="Not dead-lettered", description=f"No dead letter names task {task_id!r}.")
        resp.media = {"task_id": task_id, "queue": purged[0].queue, "purged": len(purged)}


class ReplayResource(_Base):
    def on_post(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        refused: list[DeadLetter] = []
        owner = _Owner(self.sessions, req)

        def take(letter: DeadLetter) -> bool:
            if letter.task_id != task_id or not owner.owns(letter):
                return False
            if replay_task(self.sessions, self.broker, letter):
                return True
            refused.append(letter)
            return False

        try:
            replayed = take_dead_letters(self.broker, self.queues, take)
        except DeadLetterError as exc:
            raise self._unavailable(exc) from exc
        if not replayed and refused:
            raise falcon.HTTPConflict(
                title="Task cannot be replayed",
                description=f"Task {task_id} is not FAILURE or CANCELLED (or no longer exists); its dead letter stays.",
            )
        if not replayed:
            raise falcon.HTTPNotFound(title="Not dead-lettered", description=f"No dead letter names task {task_id!r}.")
        resp.status = falcon.HTTP_202
        resp.location = f"/agent/status/{task_id}"
        resp.media = {
            "task_id": task_id,
            "queue": replayed[0].queue,
            "status": "queued",
            "status_url": f"/agent/status/{task_id}",
        }


class ReplayQueueResource(_Base):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        queues = self._queues(req, required=True)
        refused: list[str | None] = []
        owner = _Owner(self.sessions, req)

        def take(letter: DeadLetter) -> bool:
            if not owner.owns(letter):
                return False  # another tenant's: left in place
            if replay_task(self.sessions, self.broker, letter):
                return True
            refused.append(letter.task_id)
            return False

        try:
            replayed = take_dead_letters(self.broker, queues, take)
        except DeadLetterError as exc:
            raise self._unavailable(exc) from exc
        resp.status = falcon.HTTP_202
        resp.media = {"queue": queues[0], "replayed": [r.task_id for r in replayed], "refused": refused}
