"""A task's run as a waterfall: what the task's page draws, built from what the database recorded.

The event log gives the phases: waiting in the queue, each attempt (claimed by a worker, ended by
a retry, a suspension, a cancellation or the end), the backoff before a retry, the wait for child
tasks. The checkpoints give each durable step (with the failed runs of a step), ``task_calls`` each
LLM and tool call, and each child task is a bar from its submission to its end. Rows come out in
the order they happened, nested (attempt > step > call), with times in seconds since the task was
submitted; marks say where each attempt's soft and hard time limits fall and where progress was
reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from models.base import as_utc, iso
from models.checkpoints import COMPLETED, WorkflowCheckpoint
from models.task_calls import TaskCall
from models.task_queries import TreeNode
from models.tasks import TERMINAL_STATES, Task, TaskEvent, TaskState

__all__ = ["Limits", "build_timeline", "call_cost"]


@dataclass(frozen=True)
class Limits:
    """The time limits of each attempt of the task's workflow, in seconds."""

    hard: float
    soft: float
    stage: float


def call_cost(prices: Mapping[str, tuple[float, float]], model: str, prompt: int, completion: int) -> float | None:
    """Estimated US dollars of an LLM call (``INTERLOCK_LLM_PRICES``, per million tokens); ``None``: no price."""
    price = prices.get(model) or prices.get("*")
    if price is None:
        return None
    return round((prompt * price[0] + completion * price[1]) / 1e6, 8)


@dataclass
class _Phase:
    kind: str  # queue, attempt, backoff, children
    label: str
    start: float
    end: float | None = None
    status: str = "running"
    detail: dict[str, Any] = field(default_factory=dict)
    attempt: int | None = None

    def row(self, end: float) -> dict[str, Any]:
        return _row(
            self.kind,
            self.label,
            self.start,
            self.end if self.end is not None else end,
            0,
            self.status,
            attempt=self.attempt,
            **self.detail,
        )


def _row(kind: str, label: str, start: float, end: float, depth: int, status: str, **detail: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "label": label,
        "start": round(start, 3),
        "end": round(max(start, end), 3),
        "depth": depth,
        "status": status,
        **{k: v for k, v in detail.items() if v is not None},
    }


def build_timeline(
    task: Task,
    events: Iterable[TaskEvent],
    checkpoints: Iterable[WorkflowCheckpoint],
    calls: Iterable[TaskCall],
    *,
    children: Iterable[TreeNode] = (),
    limits: Limits,
    prices: Mapping[str, tuple[float, float]],
    now: datetime,
) -> dict[str, Any]:
    """The waterfall of ``task``: ``{origin, end, rows, marks, totals}`` (times in seconds from ``origin``)."""
    origin = as_utc(task.created_at)
    assert origin is not None

    def at(value: datetime | None) -> float:
        moment = as_utc(value) or now
        return (moment - origin).total_seconds()

    finished = task.state in TERMINAL_STATES
    end = at(task.finished_at) if finished and task.finished_at else at(now)
    phases, marks = _phases(list(events), at, limits)
    steps = _steps(list(checkpoints), at)
    call_rows = [_call(call, at, prices, end=end, running=not finished) for call in calls]
    child_rows = [
        _row(
            "child",
            f"{c.workflow} {c.task_id[:8]}",
            at(c.created_at),
            at(c.finished_at) if c.finished_at else end,
            1,
            c.state,
            task_id=c.task_id,
        )
        for c in children
        if c.parent_id == task.id
    ]

    runs = [p for p in phases if p.kind == "attempt"]
    inside: dict[int, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {id(run): ([], []) for run in runs}
    orphans: list[dict[str, Any]] = []  # from a run the log does not show
    for kind, items in ((0, steps), (1, call_rows + child_rows)):
        for item in items:
            run = _run_of(item, runs, end)
            if run is None:
                orphans.append(_nested(item, 1))
            else:
                inside[id(run)][kind].append(item)
    rows: list[dict[str, Any]] = []
    for phase in phases:
        rows.append(phase.row(end))
        if phase.kind == "attempt":
            rows += _inside(phase, *inside[id(phase)], end)
    rows += orphans
    llm = [c for c in call_rows if c["kind"] == "llm"]
    costs = [c["cost_usd"] for c in llm if c.get("cost_usd") is not None]
    return {
        "origin": iso(origin),
        "end": round(max([end, *(r["end"] for r in rows)]), 3),
        "running": not finished,
        "rows": rows,
        "marks": marks,
        "limits": {"time_limit": limits.hard, "soft_time_limit": limits.soft, "stage_time_limit": limits.stage},
        "totals": {
            "llm_calls": len(llm),
            "tool_calls": len(call_rows) - len(llm),
            "prompt_tokens": sum(c["prompt_tokens"] for c in llm),
            "completion_tokens": sum(c["completion_tokens"] for c in llm),
            "total_tokens": sum(c["prompt_tokens"] + c["completion_tokens"] for c in llm),
            "cost_usd": round(sum(costs), 8) if costs else None,
            "priced": len(costs) == len(llm),
        },
    }


def _run_of(item: dict[str, Any], runs: list[_Phase], end: float) -> _Phase | None:
    """The run a step or call happened in: the run of its attempt under way when it started (a
    coordinator woken by its children runs the same attempt again)."""
    candidates = [run for run in runs if run.attempt == item.get("attempt")] or runs
    if not candidates:
        return None
    slack = 0.05  # the clocks of the worker (calls) and the database (events) differ a little
    during = [r for r in candidates if r.start - slack <= item["start"] <= (end if r.end is None else r.end) + slack]
    started = [r for r in candidates if r.start - slack <= item["start"]]
    chosen = during[-1] if during else started[-1] if started else candidates[0]
    return chosen


def _inside(
    phase: _Phase, steps: list[dict[str, Any]], calls: list[dict[str, Any]], end: float
) -> list[dict[str, Any]]:
    """The rows of one run: its steps in order, each followed by its calls, and calls outside steps."""
    names = {s["label"] for s in steps}
    steps = list(steps)
    for name in dict.fromkeys(c["step"] for c in calls if c.get("step") and c["step"] not in names):
        # A step with calls but no checkpoint: it runs now, or its run ended inside it.
        own = [c for c in calls if c.get("step") == name]
        last = end if phase.end is None else phase.end
        status = "running" if phase.end is None else "unfinished"
        steps.append(_row("step", name, min(c["start"] for c in own), last, 1, status, attempt=phase.attempt))
    items = sorted(steps + [c for c in calls if not c.get("step")], key=lambda r: (r["start"], r["kind"] != "step"))
    rows: list[dict[str, Any]] = []
    placed: set[int] = set()
    for item in items:
        if item["kind"] != "step":
            placed.add(id(item))
            rows.append(_nested(item, 1))
            continue
        rows.append(item)
        for call in calls:
            if id(call) not in placed and call.get("step") == item["label"] and call["start"] <= item["end"] + 0.05:
                placed.add(id(call))
                rows.append(_nested(call, 2))
    return rows + [_nested(c, 1) for c in calls if id(c) not in placed]


def _nested(call: dict[str, Any], depth: int) -> dict[str, Any]:
    return {**call, "depth": depth}


def _phases(events: list[TaskEvent], at: Any, limits: Limits) -> tuple[list[_Phase], list[dict[str, Any]]]:
    """Queue waits, attempts, backoffs and waits for children from the event log; and the marks."""
    phases: list[_Phase] = []
    marks: list[dict[str, Any]] = []
    waiting: _Phase | None = _Phase("queue", "queued", 0.0)
    attempt: _Phase | None = None
    stopped_later = {i for i, e in enumerate(events) if e.kind == "stopped"}

    def close(phase: _Phase | None, when: float, status: str) -> None:
        if phase is not None and phase.end is None:
            phase.end, phase.status = when, status
            phases.append(phase)

    for index, event in enumerate(events):
        t, data = at(event.created_at), event.data if isinstance(event.data, dict) else {}
        if event.kind == "state" and event.state == TaskState.PROCESSING:
            woken = waiting is not None and waiting.kind == "children"
            close(waiting, t, "done")
            close(attempt, t, "lost")
            waiting = None
            number = int(data.get("attempt") or sum(1 for p in phases if p.kind == "attempt") + 1)
            worker = data.get("worker")
            label = f"attempt {number} (woken)" if woken else f"attempt {number}"
            attempt = _Phase("attempt", label, t, attempt=number, detail={"worker": worker})
            for kind, limit in (("soft_limit", limits.soft), ("hard_limit", limits.hard)):
                marks.append({"kind": kind, "at": round(t + limit, 3), "attempt": number})
        elif event.kind == "state" and event.state == TaskState.RETRY:
            lost = "reason" in data
            if attempt is not None:
                attempt.detail["error"] = data.get("error") or data.get("reason")
            close(attempt, t, "lost" if lost else "retry")
            attempt = None
            close(waiting, t, "done")
            planned = data.get("retry_in_ms")
            label = "requeued: worker lost" if lost else "retry backoff"
            waiting = _Phase("backoff", label, t, detail={"planned_ms": planned})
        elif event.kind == "state" and event.state == TaskState.PENDING:
            if index == 0:
                continue  # submitted: the first queue wait is already open
            close(attempt, t, "ended")
            attempt = None
            close(waiting, t, "done")
            reason = data.get("reason") or "requeued"
            waiting = _Phase("queue", f"queued ({reason})", t)
        elif event.kind == "state" and event.state in TERMINAL_STATES:
            marks.append({"kind": "end", "at": round(t, 3), "label": event.state})
            close(waiting, t, event.state)
            waiting = None
            if attempt is not None and not (
                event.state == TaskState.CANCELLED and any(i > index for i in stopped_later)
            ):
                if event.state != TaskState.SUCCESS:
                    attempt.detail["error"] = data.get("error")
                close(attempt, t, event.state)
                attempt = None
        elif event.kind == "waiting":
            close(attempt, t, "suspended")
            attempt = None
            close(waiting, t, "done")
            waiting = _Phase("children", "waiting for children", t)
        elif event.kind == "stopped":
            close(attempt, t, TaskState.CANCELLED)
            attempt = None
        elif event.kind == "progress":
            marks.append(
                {"kind": "progress", "at": round(t, 3), "label": f"{event.progress}% {event.step or ''}".strip()}
            )
        else:
            marks.append({"kind": event.kind, "at": round(t, 3), "label": event.step or event.kind})
    for phase in (waiting, attempt):
        if phase is not None:
            phases.append(phase)  # still open: ends now
    phases.sort(key=lambda p: p.start)
    return phases, marks


def _steps(checkpoints: list[WorkflowCheckpoint], at: Any) -> list[dict[str, Any]]:
    """Every run of every durable step: the failed ones (from ``meta.failures``) and the one that completed."""
    rows = []
    for checkpoint in checkpoints:
        meta = checkpoint.meta if isinstance(checkpoint.meta, dict) else {}
        for failure in meta.get("failures") or []:
            if not isinstance(failure, dict):
                continue
            try:
                ended = at(datetime.fromisoformat(str(failure.get("at"))))
            except ValueError:
                continue
            duration = float(failure.get("duration_ms") or 0) / 1000
            rows.append(
                _row(
                    "step",
                    checkpoint.stage,
                    ended - duration,
                    ended,
                    1,
                    "failed",
                    attempt=failure.get("attempt"),
                    error=failure.get("error"),
                )
            )
        if checkpoint.status == COMPLETED:
            ended = at(checkpoint.updated_at)
            duration = (checkpoint.duration_ms or 0) / 1000
            rows.append(
                _row("step", checkpoint.stage, ended - duration, ended, 1, "completed", attempt=meta.get("attempt"))
            )
    rows.sort(key=lambda r: r["start"])
    return rows


def _call(
    call: TaskCall, at: Any, prices: Mapping[str, tuple[float, float]], *, end: float, running: bool
) -> dict[str, Any]:
    """A call's row; one without a duration is under way (or its process died during it)."""
    start = at(call.started_at)
    if call.duration_ms is None:
        finish, status = end, "running" if running else "abandoned"
    else:
        finish, status = start + call.duration_ms / 1000, "failed" if call.error else "completed"
    row = _row(call.kind, call.name, start, finish, 2, status, attempt=call.attempt, step=call.step, error=call.error)
    if call.kind == "llm":
        row["prompt_tokens"] = call.prompt_tokens
        row["completion_tokens"] = call.completion_tokens
        row["cost_usd"] = call_cost(prices, call.name, call.prompt_tokens, call.completion_tokens)
    return row
