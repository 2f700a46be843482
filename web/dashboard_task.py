"""``GET /dashboard/api/tasks/{task_id}``: everything a task's page shows, in one answer.

Its status with its input, result and error; its run as a waterfall (``web.timeline``); its
checkpoints with their tracebacks; the tasks below it as a tree, each with its tokens and cost; and
which actions the caller may take on it (cancel, resume, replay from the dead-letter queue). A
fixed number of queries, whatever the number of events, calls or children. While the task runs,
the page reads it again each time ``/agent/stream`` brings an event.
"""

from __future__ import annotations

from collections.abc import Mapping

import falcon
from sqlalchemy.orm import Session, sessionmaker

from actors.catalogue import WorkflowSpec
from interlock.settings import Settings
from models.base import utcnow
from models.checkpoints import load_checkpoints
from models.task_calls import calls_of, combined, usage_by_task
from models.task_queries import get_task, task_events, task_tree
from models.tasks import TERMINAL_STATES, TaskState

from .auth import principal_of, visible_tenants
from .presenters import checkpoint_view, task_details, task_tree_view, usage_view
from .timeline import Limits, build_timeline

__all__ = ["TaskPage"]

#: Events a task's page reads at most (a task reporting progress every second for an hour).
MAX_EVENTS = 5000


class TaskPage:
    def __init__(
        self, settings: Settings, sessions: sessionmaker[Session], catalogue: Mapping[str, WorkflowSpec]
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.catalogue = catalogue

    def on_get(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        """A task's page: status, input, result, error, waterfall, checkpoints, children, actions."""
        with self.sessions() as session:
            task = get_task(session, task_id) if len(task_id) <= 36 else None
            if task is None:
                raise falcon.HTTPNotFound(title="Unknown task", description=f"No task has the id {task_id!r}.")
            events = task_events(session, task_id, limit=MAX_EVENTS)
            checkpoints = load_checkpoints(session, task_id)
            calls = calls_of(session, task_id)
            nodes = task_tree(session, task_id, tenants=visible_tenants(req))
            usage = usage_by_task(session, [task_id, *(node.task_id for node in nodes)])
        prices = self.settings.llm_prices
        timeline = build_timeline(
            task,
            events,
            checkpoints,
            calls,
            children=nodes,
            limits=self._limits(task.workflow),
            prices=prices,
            now=utcnow(),
        )
        principal = principal_of(req)
        resp.media = {
            "task": task_details(task),
            "timeline": timeline,
            "usage": {
                "task": usage_view(usage.get(task_id, {}), prices),
                "with_children": usage_view(combined(usage.values()), prices),
                "priced": bool(prices),
            },
            "checkpoints": [checkpoint_view(c) for c in checkpoints],
            "children": task_tree_view(nodes, usage, prices),
            "descendants": len(nodes),
            "actions": {
                "cancel": task.state not in TERMINAL_STATES and principal.allows("submit"),
                "resume": task.state in (TaskState.FAILURE, TaskState.CANCELLED) and principal.allows("submit"),
                "replay": task.state == TaskState.FAILURE and principal.allows("admin"),
            },
        }

    def _limits(self, workflow: str) -> Limits:
        spec = self.catalogue.get(workflow)
        hard, soft = spec.limits(self.settings) if spec else (self.settings.time_limit, self.settings.soft_time_limit)
        return Limits(hard=hard, soft=soft, stage=self.settings.stage_time_limit)
