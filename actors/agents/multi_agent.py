"""The reference article's orchestration: planner → (research ∥ scraper) → reviewer, durably."""

from __future__ import annotations

from typing import Any

from actors.catalogue import workflow
from actors.context import TaskContext

__all__ = ["multi_agent_workflow"]


@workflow("multi_agent", queue="default", stages=("plan", "gather", "review"))
def multi_agent_workflow(ctx: TaskContext) -> dict[str, Any]:
    """Plan, research and scrape in parallel, then review both results."""
    ctx.progress(5, "plan")
    plan = ctx.call(
        "planner",
        {"query": ctx.query, "context": {"available_agents": ["research", "scraper", "reviewer"]}},
        key="plan",
    )
    ctx.progress(30, "gather")
    research, scraped = ctx.gather(
        [
            ("research", {"query": ctx.query, "context": {"plan": plan["data"]["plan"]}}, "research"),
            ("scraper", {"query": ctx.query, "context": {"urls": ctx.context.get("urls") or []}}, "scraper"),
        ],
        progress_to=70,
    )
    ctx.progress(70, "review")
    review = ctx.call(
        "reviewer",
        {"query": ctx.query, "context": {"content": {"research": research, "scraper": scraped}}},
        key="review",
    )
    return {
        "status": "success",
        "result": review["data"],
        "metadata": {"plan": plan["data"], "research": research, "scraper": scraped},
    }
