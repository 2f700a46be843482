"""Research agent: gathers what the model knows about a topic."""

from __future__ import annotations

from typing import Any

from actors.catalogue import workflow
from actors.context import TaskContext

__all__ = ["research_agent"]


@workflow("research", queue="research")
def research_agent(ctx: TaskContext) -> dict[str, Any]:
    """Research a topic with the LLM."""
    ctx.progress(20, "researching")
    completion = ctx.complete(
        [
            {"role": "system", "content": "You are a research agent. Summarise what is known, with sources."},
            {"role": "user", "content": f"[agent:research] Topic: {ctx.query}\nPlan: {ctx.context.get('plan', '')}"},
        ]
    )
    return {
        "agent": "research",
        "status": "success",
        "data": {"topic": ctx.query, "summary": completion.text},
        "metadata": {"model": completion.model, "usage": dict(ctx.usage)},
    }
