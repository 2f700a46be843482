"""Tools agent: calls the API named in ``context.endpoint`` with ``context.params`` (none, no call)."""

from __future__ import annotations

from typing import Any

from actors.catalogue import workflow
from actors.context import TaskContext
from actors.errors import InvalidInput
from actors.tools.external_api import call_api

__all__ = ["tools_agent"]


@workflow("tools", queue="tools")
def tools_agent(ctx: TaskContext) -> dict[str, Any]:
    """External API call through the safe, cached, circuit-broken API tool."""
    endpoint = ctx.context.get("endpoint")
    if not endpoint:
        return {"agent": "tools", "status": "success", "data": None}
    params = ctx.context.get("params") or {}
    if not isinstance(endpoint, str) or not isinstance(params, dict):
        raise InvalidInput("context.endpoint must be a URL string and context.params an object")
    ctx.progress(30, "calling", endpoint=endpoint)
    with ctx.tool_call("call_external_api"):
        data = call_api(endpoint, params, settings=ctx.settings, sessions=ctx.runtime.sessions)
    return {"agent": "tools", "status": "success", "data": data}
