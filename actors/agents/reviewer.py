"""Reviewer agent: scores the combined work of the other agents."""

from __future__ import annotations

import re
from typing import Any

from actors.catalogue import workflow
from actors.context import TaskContext

__all__ = ["reviewer_agent"]

APPROVAL_THRESHOLD = 0.7


@workflow("reviewer", queue="reviewer")
def reviewer_agent(ctx: TaskContext) -> dict[str, Any]:
    """Validate and score content (the results handed over in ``context.content``)."""
    content = ctx.context.get("content") or {}
    ctx.progress(20, "reviewing")
    completion = ctx.complete(
        [
            {"role": "system", "content": "Review the material. Answer with a quality score from 0 to 1 first."},
            {"role": "user", "content": f"[agent:reviewer] Task: {ctx.query}\nMaterial: {content}"},
        ]
    )
    score = _score(completion.text, content)
    issues = [f"{name} produced nothing" for name, value in content.items() if not _has_data(value)]
    return {
        "agent": "reviewer",
        "status": "success",
        "data": {
            "quality_score": score,
            "issues": issues,
            "approved": score > APPROVAL_THRESHOLD,
            "review": completion.text,
            "reviewed": sorted(content),
        },
        "metadata": {"model": completion.model, "usage": dict(ctx.usage)},
    }


def _has_data(value: Any) -> bool:
    return bool(isinstance(value, dict) and value.get("data"))


def _score(text: str, content: dict[str, Any]) -> float:
    """The model's score when it gave one; else the share of inputs that produced data."""
    match = re.search(r"\b(0(?:\.\d+)?|1(?:\.0+)?)\b", text)
    if match:
        return float(match.group(1))
    if not content:
        return 0.0
    return round(sum(_has_data(v) for v in content.values()) / len(content), 2)
