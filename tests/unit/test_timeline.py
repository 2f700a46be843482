"""The waterfall a task's page draws, from an event log, checkpoints and calls made up here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from models.checkpoints import WorkflowCheckpoint
from models.task_calls import TaskCall
from models.task_queries import TreeNode
from models.tasks import Task, TaskEvent
from web.timeline import Limits, build_timeline, call_cost

T0 = datetime(2026, 1, 5, 9, 0, 0, tzinfo=UTC)
LIMITS = Limits(hard=60.0, soft=55.0, stage=30.0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def event(seconds: float, kind: str, state: str, **data: Any) -> TaskEvent:
    return TaskEvent(
        kind=kind, state=state, progress=-1, step=data.pop("step", None), data=data or None, created_at=at(seconds)
    )


def task(state: str, finished: float | None) -> Task:
    return Task(
        id="t1", workflow="agent", state=state, created_at=at(0), finished_at=at(finished) if finished else None
    )


def checkpoint(stage: str, status: str, ended: float, ms: int, **meta: Any) -> WorkflowCheckpoint:
    return WorkflowCheckpoint(stage=stage, status=status, updated_at=at(ended), duration_ms=ms, meta=meta)


def llm(
    attempt: int, step: str | None, start: float, ms: int, tokens: tuple[int, int] = (100, 50), error: str | None = None
) -> TaskCall:
    return TaskCall(
        attempt=attempt,
        step=step,
        kind="llm",
        name="gpt-4o-mini",
        started_at=at(start),
        duration_ms=ms,
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
        error=error,
    )


def shape(rows: list[dict[str, Any]]) -> list[tuple[int, str, str, str]]:
    return [(r["depth"], r["kind"], r["label"], r["status"]) for r in rows]


def test_a_retried_run_shows_queue_attempts_steps_calls_and_backoff_in_order() -> None:
    events = [
        event(0.0, "state", "PENDING"),
        event(0.5, "state", "PROCESSING", attempt=1, worker="w1"),
        event(3.0, "state", "RETRY", error="TransientError: LLM server error (500)", retry_in_ms=2000),
        event(5.0, "state", "PROCESSING", attempt=2, worker="w2"),
        event(9.0, "state", "SUCCESS", result={}),
    ]
    failure = {"attempt": 1, "error": "TransientError: 500", "at": at(2.9).isoformat(), "duration_ms": 1400}
    checkpoints = [
        checkpoint("reasoning", "completed", 1.5, 900, attempt=1, failures=[]),
        checkpoint("synthesis", "completed", 8.5, 3000, attempt=2, failures=[failure]),
    ]
    calls = [
        llm(1, "reasoning", 0.7, 700),
        llm(1, "synthesis", 1.6, 1200, error="TransientError: LLM server error (500)"),
        llm(2, "synthesis", 5.6, 2800),
    ]
    timeline = build_timeline(
        task("SUCCESS", 9.0), events, checkpoints, calls, limits=LIMITS, prices={"gpt-4o-mini": (0.15, 0.6)}, now=at(20)
    )
    assert shape(timeline["rows"]) == [
        (0, "queue", "queued", "done"),
        (0, "attempt", "attempt 1", "retry"),
        (1, "step", "reasoning", "completed"),
        (2, "llm", "gpt-4o-mini", "completed"),
        (1, "step", "synthesis", "failed"),
        (2, "llm", "gpt-4o-mini", "failed"),
        (0, "backoff", "retry backoff", "done"),
        (0, "attempt", "attempt 2", "SUCCESS"),
        (1, "step", "synthesis", "completed"),
        (2, "llm", "gpt-4o-mini", "completed"),
    ]
    rows = timeline["rows"]
    assert rows[1]["error"].startswith("TransientError")
    assert rows[6]["planned_ms"] == 2000
    assert (rows[6]["start"], rows[6]["end"]) == (3.0, 5.0)
    assert (rows[8]["start"], rows[8]["end"]) == (5.5, 8.5)  # ended when written, took its duration
    assert rows[7]["worker"] == "w2"
    assert timeline["totals"]["total_tokens"] == 450
    assert timeline["totals"]["cost_usd"] == round(3 * (100 * 0.15 + 50 * 0.6) / 1e6, 8)
    limits = [(m["kind"], m["at"]) for m in timeline["marks"] if m["kind"].endswith("limit")]
    assert limits == [("soft_limit", 55.5), ("hard_limit", 60.5), ("soft_limit", 60.0), ("hard_limit", 65.0)]


def test_a_running_task_grows_until_now_and_shows_the_step_it_is_in() -> None:
    events = [event(0.0, "state", "PENDING"), event(0.2, "state", "PROCESSING", attempt=1, worker="w1")]
    calls = [llm(1, "reasoning", 0.4, 1000)]
    timeline = build_timeline(task("PROCESSING", None), events, [], calls, limits=LIMITS, prices={}, now=at(4))
    assert shape(timeline["rows"]) == [
        (0, "queue", "queued", "done"),
        (0, "attempt", "attempt 1", "running"),
        (1, "step", "reasoning", "running"),
        (2, "llm", "gpt-4o-mini", "completed"),
    ]
    assert timeline["rows"][1]["end"] == 4.0
    assert timeline["running"] is True
    assert timeline["totals"]["cost_usd"] is None  # no price configured


def test_a_coordinator_waits_for_its_children_and_is_woken() -> None:
    events = [
        event(0.0, "state", "PENDING"),
        event(0.1, "state", "PROCESSING", attempt=1),
        event(0.3, "waiting", "PROCESSING", reason="waiting for child tasks"),
        event(2.0, "state", "PROCESSING", attempt=1),
        event(2.2, "state", "SUCCESS"),
    ]
    child = TreeNode("c1", "t1", "planner", "SUCCESS", 100, None, at(0.2), at(0.25), at(1.9))
    timeline = build_timeline(
        task("SUCCESS", 2.2), events, [], [], children=[child], limits=LIMITS, prices={}, now=at(9)
    )
    assert shape(timeline["rows"]) == [
        (0, "queue", "queued", "done"),
        (0, "attempt", "attempt 1", "suspended"),
        (1, "child", "planner c1", "SUCCESS"),
        (0, "children", "waiting for children", "done"),
        (0, "attempt", "attempt 1 (woken)", "SUCCESS"),
    ]
    assert timeline["rows"][2]["task_id"] == "c1"


def test_a_task_cancelled_while_it_ran_ends_its_attempt_when_the_worker_stopped() -> None:
    events = [
        event(0.0, "state", "PENDING"),
        event(0.1, "state", "PROCESSING", attempt=1),
        event(1.0, "state", "CANCELLED", error="cancelled"),
        event(1.4, "stopped", "CANCELLED"),
    ]
    timeline = build_timeline(task("CANCELLED", 1.0), events, [], [], limits=LIMITS, prices={}, now=at(9))
    attempt = timeline["rows"][1]
    assert (attempt["status"], attempt["end"]) == ("CANCELLED", 1.4)


def test_cost_uses_the_model_price_or_the_wildcard() -> None:
    prices = {"gpt-4o": (2.5, 10.0), "*": (1.0, 1.0)}
    assert call_cost(prices, "gpt-4o", 1_000_000, 100_000) == 3.5
    assert call_cost(prices, "other", 500_000, 500_000) == 1.0
    assert call_cost({}, "gpt-4o", 10, 10) is None
