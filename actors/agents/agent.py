"""The general agent workflow: reason with the LLM, run the tools it asks for, synthesise."""

from __future__ import annotations

from typing import Any

from ..context import TaskContext
from ..errors import InvalidInput, SoftTimeLimitExceeded
from ..registry import workflow

SYSTEM_REASONING = "You are a helpful research agent. Analyse the query and say which tools you need."
SYSTEM_SYNTHESIS = "Synthesise the findings into a final answer."


@workflow("agent", queue="default")
def execute_agent_workflow(ctx: TaskContext) -> dict[str, Any]:
    """Reason, use tools, synthesise: the reference article's agent, with durable progress."""
    if not ctx.query.strip():
        raise InvalidInput("query must be a non-empty string")
    ctx.progress(10, "initializing")

    ctx.progress(25, "reasoning")
    reasoning = ctx.complete(
        [
            {"role": "system", "content": SYSTEM_REASONING},
            {"role": "user", "content": f"Analyze this query: {ctx.query}\nContext: {ctx.context}"},
        ]
    )

    try:
        ctx.progress(50, "tool_execution")
        # Tool execution arrives with the tools issue; until then none run, and the result says so.
        tools_used: list[str] = []
        tool_results: dict[str, Any] = {"tools_run": 0, "note": "no tools are available to this agent yet"}

        ctx.progress(75, "synthesis")
        synthesis = ctx.complete(
            [
                {"role": "system", "content": SYSTEM_SYNTHESIS},
                {
                    "role": "user",
                    "content": (
                        f"Query: {ctx.query}\nReasoning: {reasoning.text}\nTool results: {tool_results}"
                    ),
                },
            ]
        )
        answer, status = synthesis.text, "success"
    except SoftTimeLimitExceeded:
        # The soft limit passed: answer with the reasoning we have rather than be killed.
        answer, status, tools_used = reasoning.text, "partial", []
        ctx.event("soft_time_limit", step="synthesis", action="returned the reasoning as a partial answer")

    return {
        "status": status,
        "result": answer,
        "metadata": {
            "reasoning": reasoning.text,
            "tools_used": tools_used,
            "model": reasoning.model,
            "usage": dict(ctx.usage),
        },
    }
