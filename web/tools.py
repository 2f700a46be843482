"""``POST /tools/{name}``: run one tool as a task; the JSON body is the tool's arguments."""

from __future__ import annotations

from collections.abc import Mapping

import dramatiq
import falcon
from sqlalchemy.orm import Session, sessionmaker

from actors.agents.tools import TOOL_SCHEMAS, validate_args
from actors.errors import InvalidInput
from actors.registry import WorkflowSpec
from actors.submit import PRIORITIES, resolve_priority, submit

__all__ = ["ToolResource"]


class ToolResource:
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

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        if name not in TOOL_SCHEMAS or name not in self.catalogue:
            raise falcon.HTTPNotFound(
                title="Unknown tool",
                description=f"No tool is called {name!r}. Tools: {', '.join(sorted(TOOL_SCHEMAS))}.",
            )
        priority = req.get_param("priority") or "normal"
        if priority not in PRIORITIES:
            raise falcon.HTTPBadRequest(
                title="Invalid priority",
                description=f"priority must be one of {', '.join(PRIORITIES)}, not {priority!r}.",
            )
        try:
            args = validate_args(name, req.get_media())
        except InvalidInput as exc:
            raise falcon.HTTPBadRequest(title="Invalid tool arguments", description=f"{name}: {exc}") from exc
        task = submit(
            self.sessions,
            self.broker,
            self.catalogue,
            workflow=name,
            input=args,
            priority=resolve_priority(priority, max_priority=self.max_priority),
        )
        status_url = f"/agent/status/{task.id}"
        resp.status = falcon.HTTP_202
        resp.location = status_url
        resp.media = {"task_id": task.id, "status": "queued", "status_url": status_url}
