"""The reference article's event-triggered agents, each a subscription on the event bus.

``new_data_arrived`` (and GitHub pushes) → ``agent_on_new_data`` → ``data_processed``;
``environment_changed`` → ``agent_on_environment_change`` → ``agent_adapted``;
``user_updated`` (and ``user.*``, Slack events) → ``agent_on_user_update``.
Each run is a task: its progress, retries and result are recorded like any other.
"""

from __future__ import annotations

from typing import Any

from actors.context import TaskContext
from actors.events.subscriptions import subscribe
from models.base import utcnow

__all__ = ["agent_on_new_data", "agent_on_environment_change", "agent_on_user_update"]

SYSTEM_SUMMARY = "You summarise newly arrived data for downstream agents in two sentences."


def _event(ctx: TaskContext) -> tuple[str, dict[str, Any]]:
    data = ctx.input.get("data")
    return str(ctx.input.get("source") or "unknown"), data if isinstance(data, dict) else {}


@subscribe("new_data_arrived", "github.push", max_retries=3)
def agent_on_new_data(ctx: TaskContext) -> dict[str, Any]:
    """Processes newly arrived data and tells downstream agents (``data_processed``)."""
    source, data = _event(ctx)
    origin = str(data.get("source") or source)
    ctx.progress(20, "summarising")
    summary = ctx.step(
        "summarise",
        lambda: (
            ctx.complete(
                [
                    {"role": "system", "content": SYSTEM_SUMMARY},
                    {"role": "user", "content": f"Source: {origin}\nData: {str(data)[:4000]}"},
                ]
            ).text
        ),
    )
    processed = {
        "source": origin,
        "event_id": ctx.input.get("event_id"),
        "processed_at": utcnow().isoformat(),
        "summary": summary,
        "status": "success",
    }
    ctx.progress(80, "publishing")
    event_id, task_ids = ctx.publish("data_processed", processed, source="agent_on_new_data")
    return {**processed, "published": {"event_id": event_id, "type": "data_processed", "task_ids": task_ids}}


@subscribe("environment_changed", max_retries=3)
def agent_on_environment_change(ctx: TaskContext) -> dict[str, Any]:
    """Adapts to a change in its environment and announces it (``agent_adapted``)."""
    _, data = _event(ctx)
    change = str(data.get("change_type") or "unspecified change")
    ctx.progress(50, "adapting")
    adaptation = {
        "change_detected": change,
        "impact": data.get("impact"),
        "adaptation_strategy": f"Adjusted for {change}",
        "event_id": ctx.input.get("event_id"),
        "timestamp": utcnow().isoformat(),
    }
    event_id, task_ids = ctx.publish("agent_adapted", adaptation, source="agent_on_environment_change")
    return {**adaptation, "published": {"event_id": event_id, "type": "agent_adapted", "task_ids": task_ids}}


@subscribe("user_updated", "user.*", "slack.*", max_retries=3)
def agent_on_user_update(ctx: TaskContext) -> dict[str, Any]:
    """Acknowledges an update a user made (the article's Slack events arrive here)."""
    source, data = _event(ctx)
    update_type = data.get("update_type") or data.get("event_type") or ctx.input.get("event_type")
    ctx.progress(50, "acknowledging")
    return {
        "user_id": data.get("user_id") or data.get("user"),
        "source": source,
        "acknowledgment": f"Processed {update_type} update",
        "next_action": "user_notified",
        "timestamp": utcnow().isoformat(),
    }
