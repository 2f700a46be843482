"""Chord: research ∥ scraper ∥ tools, then one aggregation over whatever they produced."""

from __future__ import annotations

import time
from typing import Any

from actors.catalogue import workflow
from actors.context import TaskContext

__all__ = ["MEMBERS", "chord_workflow", "aggregate_agent_results"]

MEMBERS = ("research", "scraper", "tools")


@workflow("chord", queue="default", stages=("gather", "aggregate"))
def chord_workflow(ctx: TaskContext) -> dict[str, Any]:
    """Run three agents in parallel; the aggregate callback gets all results, failed ones as errors."""
    ctx.progress(5, "gather")
    inputs = {
        "research": {},
        "scraper": {"urls": ctx.context.get("urls") or []},
        "tools": {"endpoint": ctx.context.get("endpoint"), "params": ctx.context.get("params") or {}},
    }
    results = ctx.gather(
        [(name, {"query": ctx.query, "context": inputs[name]}, name) for name in MEMBERS], partial=True, progress_to=80
    )
    ctx.progress(80, "aggregate")
    members = [
        result if result is not None else {"agent": name, "status": "failed", "data": None}
        for name, result in zip(MEMBERS, results, strict=True)
    ]
    return ctx.call("aggregate", {"query": ctx.query, "context": {"results": members}}, key="aggregate")


@workflow("aggregate", queue="default")
def aggregate_agent_results(ctx: TaskContext) -> dict[str, Any]:
    """The chord's callback: count and combine the members' results (also a batch tool's callback)."""
    results = ctx.context.get("results") or []
    return {
        "total_agents": len(results),
        "successful": sum(1 for r in results if r.get("status") == "success"),
        "combined_data": [r.get("data") for r in results],
        "timestamp": time.time(),
    }
