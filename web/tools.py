"""``POST /tools/{name}``: run one tool as a task; the JSON body is the tool's arguments."""

from __future__ import annotations

import falcon

from actors.agents.batch_tools import check_callback
from actors.errors import InvalidInput
from actors.submit import PRIORITIES
from actors.tools.catalogue import TOOL_SCHEMAS, validate_args

from .tasks import SubmitResource

__all__ = ["ToolResource"]


class ToolResource(SubmitResource):
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
            if args.get("callback") is not None:
                check_callback(self.catalogue, args["callback"])
        except InvalidInput as exc:
            raise falcon.HTTPBadRequest(title="Invalid tool arguments", description=f"{name}: {exc}") from exc
        self.accepted(resp, self.submit(req, name, args, priority).task)
