"""The reference article's checkpointed workflow, on durable steps.

Each stage's result is a checkpoint; a retry, a crash redelivery or a manual resume starts at the
first stage without one. The query and context travel in every checkpoint, so a resume has them.
As in the article, the last checkpoint, ``completed``, holds the workflow's whole result.
"""

from __future__ import annotations

from typing import Any

from actors.catalogue import workflow
from actors.context import TaskContext
from actors.errors import InvalidInput

__all__ = ["STAGES", "execute_checkpointed_workflow"]

STAGES = ("reasoning", "searching", "analyzing", "acting", "reflecting", "completed")


@workflow("checkpointed", queue="default", stages=STAGES)
def execute_checkpointed_workflow(ctx: TaskContext) -> dict[str, Any]:
    """Reason, search, analyse, act, reflect, then record the result: six checkpointed stages."""
    if not ctx.query.strip():
        raise InvalidInput("query must be a non-empty string")

    ctx.progress(10, "reasoning")
    reasoning = ctx.step("reasoning", _reason, ctx)
    ctx.progress(30, "searching")
    search_results = ctx.step("searching", _search, reasoning["search_queries"], ctx.context)
    ctx.progress(50, "analyzing")
    analysis = ctx.step("analyzing", _analyse, ctx, search_results)
    ctx.progress(70, "acting")
    action = ctx.step("acting", _act, analysis)
    ctx.progress(90, "reflecting")
    reflection = ctx.step("reflecting", _reflect, ctx, analysis, action)
    stages = {
        "reasoning": reasoning,
        "search_results": search_results,
        "analysis": analysis,
        "action_result": action,
        "reflection": reflection,
    }
    # The final checkpoint: a redelivery after it returns this result without building it again.
    return ctx.step("completed", _complete, ctx, stages)


def _complete(ctx: TaskContext, stages: dict[str, Any]) -> dict[str, Any]:
    return {
        "workflow_id": ctx.task_id,
        "status": "completed",
        "result": stages,
        "metadata": {"model": ctx.runtime.llm.model, "usage": dict(ctx.usage), "stages": list(STAGES)},
    }


def _reason(ctx: TaskContext) -> dict[str, Any]:
    completion = ctx.complete(
        [
            {"role": "system", "content": "You are a reasoning agent. Plan the search strategy."},
            {"role": "user", "content": f"[stage:reasoning] Query: {ctx.query}\nContext: {ctx.context}"},
        ]
    )
    # Search queries come from the plan's lines, falling back to the query itself.
    lines = [line.strip("-* ").strip() for line in completion.text.splitlines() if line.strip()]
    return {"reasoning": completion.text, "search_queries": lines[:3] or [ctx.query], "approach": "comprehensive"}


def _search(queries: list[str], context: dict[str, Any]) -> list[dict[str, Any]]:
    # Documents handed in with the job are the corpus until the search tools are wired in.
    documents = [str(d) for d in context.get("documents", [])]
    return [
        {"query": q, "results": [d for d in documents if any(w.lower() in d.lower() for w in q.split())][:5]}
        for q in queries
    ]


def _analyse(ctx: TaskContext, search_results: list[dict[str, Any]]) -> dict[str, Any]:
    completion = ctx.complete(
        [
            {"role": "system", "content": "Analyze the search results."},
            {"role": "user", "content": f"[stage:analyzing] Query: {ctx.query}\nResults: {search_results}"},
        ]
    )
    found = sum(len(r["results"]) for r in search_results)
    return {"analysis": completion.text, "documents_considered": found}


def _act(analysis: dict[str, Any]) -> dict[str, Any]:
    return {"action_taken": "generated_report", "report_chars": len(analysis["analysis"]), "status": "success"}


def _reflect(ctx: TaskContext, analysis: dict[str, Any], action: dict[str, Any]) -> dict[str, Any]:
    completion = ctx.complete(
        [
            {"role": "system", "content": "Reflect on the process and the quality of the result."},
            {"role": "user", "content": f"[stage:reflecting] Query: {ctx.query}\nAnalysis: {analysis['analysis']}"},
        ]
    )
    return {"reflection": completion.text, "action": action["action_taken"]}
