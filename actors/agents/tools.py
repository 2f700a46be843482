"""The tools as workflows: one on the ``tools`` queue for each tool ``actors.tools`` declares.

``POST /tools/{name}`` submits one of them with its arguments as the task input; agent workflows
call the tools in-process instead (``actors.tools.scraping.scrape``, ``...external_api.call_api``,
``...sql.query_database``, or ``actors.tools.catalogue.run_tool``). A new tool in ``actors/tools/``
gets its workflow here without a change to this module. Batch tools run as the coordinators of
``actors.agents.batch_tools``.
"""

from __future__ import annotations

from typing import Any

from actors.catalogue import WorkflowFn, workflow
from actors.context import TaskContext
from actors.tools.catalogue import Tool, discover_tools, run_tool

__all__ = ["TOOLS_QUEUE", "TOOL_MAX_RETRIES", "TOOL_TIME_LIMIT", "tool_workflow"]

TOOLS_QUEUE = "tools"
#: Tools are cheap to retry and a fast-failing open breaker spends retries too.
TOOL_MAX_RETRIES = 5
TOOL_TIME_LIMIT = 300.0


def tool_workflow(declared: Tool) -> WorkflowFn:
    """The workflow that runs ``declared`` with the task's input as its arguments."""

    def run(ctx: TaskContext) -> dict[str, Any]:
        with ctx.tool_call(declared.name):
            return run_tool(declared.name, ctx.input, settings=ctx.settings, sessions=ctx.runtime.sessions)

    run.__name__ = run.__qualname__ = declared.name
    run.__doc__ = declared.description
    return run


for _tool in discover_tools().values():
    if _tool.run is not None:
        workflow(
            _tool.name,
            queue=TOOLS_QUEUE,
            submittable=False,
            max_retries=TOOL_MAX_RETRIES,
            time_limit=TOOL_TIME_LIMIT,
        )(tool_workflow(_tool))
