"""Batch tools: fan a tool out over many targets as one task whose children are the calls.

``batch_api_calls(endpoints)`` and ``batch_url_scraping(urls, callback?)`` spawn one child per
target on the tools queue (so the tools rate limit and breakers apply to each call) and gather
their results durably; with ``callback`` the named workflow receives all results (a chord).
A callback is a workflow the caller could submit itself (``check_callback``), checked when the
batch is submitted and again when it is started (``actors.orchestration.check_child``).
The coordinator itself runs on the default queue, so waiting never spends the tools budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actors.catalogue import WorkflowSpec, workflow
from actors.context import TaskContext
from actors.errors import InvalidInput

__all__ = ["check_callback", "batch_api_calls", "batch_url_scraping"]


def check_callback(catalogue: Mapping[str, WorkflowSpec], callback: str) -> str:
    """``callback`` if it names a submittable workflow; else :class:`InvalidInput` listing those."""
    spec = catalogue.get(callback)
    if spec is None or not spec.submittable:
        known = ", ".join(sorted(name for name, s in catalogue.items() if s.submittable))
        raise InvalidInput(f"callback {callback!r} is not a workflow you can submit; choose one of: {known}")
    return callback


def _fan_out(ctx: TaskContext, tool: str, field: str, targets: list[str]) -> dict[str, Any]:
    if not targets or not all(isinstance(target, str) for target in targets):
        raise InvalidInput(f"{field} must be a non-empty list of URLs")
    calls = [(tool, _args(tool, target), f"{tool}:{index}") for index, target in enumerate(targets)]
    ctx.progress(10, "fan_out", members=len(calls))
    callback = ctx.input.get("callback")
    results = ctx.gather(calls, partial=True, progress_to=90 if callback else 99)
    members = [
        {"target": target, "status": "success" if result is not None else "failed", "data": result}
        for target, result in zip(targets, results, strict=True)
    ]
    summary = {
        "total_tasks": len(members),
        "successful": sum(1 for m in members if m["status"] == "success"),
        "results": members,
    }
    if not callback:
        return summary
    ctx.progress(90, "callback", callback=callback)
    return ctx.call(str(callback), {"query": f"{tool} batch", "context": {"results": members}}, key="callback")


def _args(tool: str, target: str) -> dict[str, Any]:
    return {"url": target} if tool == "scrape_url" else {"endpoint": target, "params": {}}


@workflow("batch_api_calls", queue="default", submittable=False, stages=("fan_out",), children=("call_external_api",))
def batch_api_calls(ctx: TaskContext) -> dict[str, Any]:
    """Call many JSON endpoints in parallel; the batch's children are the calls."""
    return _fan_out(ctx, "call_external_api", "endpoints", list(ctx.input.get("endpoints") or []))


@workflow(
    "batch_url_scraping",
    queue="default",
    submittable=False,
    stages=("fan_out", "callback"),
    children=("scrape_url",),
)
def batch_url_scraping(ctx: TaskContext) -> dict[str, Any]:
    """Scrape many pages in parallel; an optional callback workflow gets all the results."""
    return _fan_out(ctx, "scrape_url", "urls", list(ctx.input.get("urls") or []))
