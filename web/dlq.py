"""Dead-lettered tasks: ``GET /dlq``, replay and purge, one task or a whole queue."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dramatiq
import falcon
from sqlalchemy.orm import Session, sessionmaker

from actors.dead_letters import (
    DeadLetter,
    DeadLetterError,
    list_dead_letters,
    purge,
    replay_task,
    take_dead_letters,
    task_details,
)
from actors.registry import WorkflowSpec
from models.base import iso

from .auth import visible_tenants

__all__ = ["DeadLettersResource", "DeadLetterResource", "ReplayResource", "ReplayQueueResource"]


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
        tenants = visible_tenants(req)
        with self.sessions() as session:
            tasks = task_details(session, (m.task_id or "" for ms in letters.values() for m in ms))
            queues: list[dict[str, Any]] = []
            for queue, messages in letters.items():
                rows = []
                for letter in messages:
                    task = tasks.get(letter.task_id or "")
                    if tenants is not None and task is not None and task.tenant not in tenants:
                        continue  # another tenant's dead letter
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
        try:
            purged = purge(self.broker, queues)
        except DeadLetterError as exc:
            raise self._unavailable(exc) from exc
        resp.media = {"queue": queues[0], "purged": len(purged), "task_ids": [p.task_id for p in purged]}


class DeadLetterResource(_Base):
    def on_delete(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        try:
            purged = purge(self.broker, self.queues, task_id)
        except DeadLetterError as exc:
            raise self._unavailable(exc) from exc
        if not purged:
            raise falcon.HTTPNotFound(title="Not dead-lettered", description=f"No dead letter names task {task_id!r}.")
        resp.media = {"task_id": task_id, "queue": purged[0].queue, "purged": len(purged)}


class ReplayResource(_Base):
    def on_post(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        refused: list[DeadLetter] = []

        def take(letter: DeadLetter) -> bool:
            if letter.task_id != task_id:
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

        def take(letter: DeadLetter) -> bool:
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
