"""The general agent workflow: reason with the LLM, run the tools it asks for, synthesise."""

from __future__ import annotations

from typing import Any

from actors.catalogue import workflow
from actors.context import TaskContext
from actors.errors import InvalidInput, SoftTimeLimitExceeded
from actors.tools.external_api import call_api
from actors.tools.scraping import scrape

__all__ = ["execute_agent_workflow"]

SYSTEM_REASONING = "You are a helpful research agent. Analyse the query and say which tools you need."
SYSTEM_SYNTHESIS = "Synthesise the findings into a final answer."


# The actor keeps the reference article's name; messages sent before it had it still run.
@workflow("agent", queue="default", actor_name="execute_agent_workflow", former_actor_names=("interlock.agent",))
def execute_agent_workflow(ctx: TaskContext) -> dict[str, Any]:
    """Reason, use tools, synthesise: the reference article's agent, with durable progress."""
    if not ctx.query.strip():
        raise InvalidInput("query must be a non-empty string")
    ctx.progress(10, "initializing")

    # Each paid call is a durable step: a retry after a later failure does not pay for it again.
    ctx.progress(25, "reasoning")
    reasoning = ctx.step(
        "reasoning", _ask, ctx, SYSTEM_REASONING, f"Analyze this query: {ctx.query}\nContext: {ctx.context}"
    )

    synthesis: dict[str, Any] | None = None
    try:
        # From here the reasoning is an answer: a call still waiting at the soft limit is cut off there.
        with ctx.until_soft_limit():
            ctx.progress(50, "tool_execution")
            tools_used, tool_results = ctx.step("tool_execution", _run_tools, ctx)

            ctx.progress(75, "synthesis")
            prompt = f"Query: {ctx.query}\nReasoning: {reasoning['text']}\nTool results: {tool_results}"
            synthesis = ctx.step("synthesis", _ask, ctx, SYSTEM_SYNTHESIS, prompt)
            answer, status = synthesis["text"], "success"
    except SoftTimeLimitExceeded:
        # The soft limit passed: answer with the reasoning we have rather than be killed.
        answer, status, tools_used = reasoning["text"], "partial", []
        ctx.event("soft_time_limit", step="synthesis", action="returned the reasoning as a partial answer")

    return {
        "status": status,
        "result": answer,
        "metadata": {
            "reasoning": reasoning["text"],
            "tools_used": tools_used,
            "model": reasoning["model"],
            # Usage of every call the result rests on, including those made by earlier attempts.
            "usage": _total_usage(reasoning, synthesis if status == "success" else None),
        },
    }


def _ask(ctx: TaskContext, system: str, prompt: str) -> dict[str, Any]:
    completion = ctx.complete([{"role": "system", "content": system}, {"role": "user", "content": prompt}])
    return {"text": completion.text, "model": completion.model, "usage": completion.usage}


def _run_tools(ctx: TaskContext) -> tuple[list[str], dict[str, Any]]:
    """Run the tools the job asks for: pages in ``context.urls``, an API in ``context.endpoint``."""
    used: list[str] = []
    results: dict[str, Any] = {}
    urls = ctx.context.get("urls") or []
    if urls:
        results["pages"] = []
        for url in urls:
            with ctx.tool_call("scrape_url"):  # each call is a bar of the task's timeline
                results["pages"].append(scrape(str(url), settings=ctx.settings, sessions=ctx.runtime.sessions))
        used.append("scrape_url")
    endpoint = ctx.context.get("endpoint")
    if endpoint:
        params = ctx.context.get("params") or {}
        with ctx.tool_call("call_external_api"):
            results["api"] = call_api(str(endpoint), params, settings=ctx.settings, sessions=ctx.runtime.sessions)
        used.append("call_external_api")
    if not used:
        results["note"] = "no tool was requested (context.urls, context.endpoint)"
    return used, results


def _total_usage(*calls: dict[str, Any] | None) -> dict[str, int]:
    total: dict[str, int] = {}
    for call in calls:
        for key, value in ((call or {}).get("usage") or {}).items():
            total[key] = total.get(key, 0) + int(value)
    return total
