"""Planner agent: turns a goal into an execution plan for the other agents."""

from __future__ import annotations

from typing import Any

from actors.catalogue import workflow
from actors.context import TaskContext

__all__ = ["planner_agent"]


@workflow("planner", queue="planner")
def planner_agent(ctx: TaskContext) -> dict[str, Any]:
    """Plan which agents do what for a goal."""
    agents = ctx.context.get("available_agents") or ["research", "scraper", "reviewer"]
    ctx.progress(20, "planning")
    completion = ctx.complete(
        [
            {"role": "system", "content": "You are a planner. Say what each agent should do, one line each."},
            {"role": "user", "content": f"[agent:planner] Goal: {ctx.query}\nAgents: {', '.join(agents)}"},
        ]
    )
    steps = [{"agent": agent, "action": "run"} for agent in agents]
    return {
        "agent": "planner",
        "status": "success",
        "data": {"goal": ctx.query, "plan": completion.text, "steps": steps},
        "metadata": {"model": completion.model, "usage": dict(ctx.usage)},
    }
