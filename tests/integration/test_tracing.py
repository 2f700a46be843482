"""Tracing: one trace per task, from its HTTP submission through the queue to its steps and LLM calls.

The API and the worker of an in-test stack send their spans to an in-memory exporter; the task
runs on the real RabbitMQ and PostgreSQL against the fake LLM server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from interlock import tracing
from interlock.settings import Settings
from testkit.fakes.http_server import FakeWebServer
from testkit.waiting import wait_until
from tests.stack import MakeStack
from tests.support import wait_for_state

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

STAGES = ["reasoning", "searching", "analyzing", "acting", "reflecting", "completed"]
#: The checkpointed workflow's stages that call the LLM.
LLM_STAGES = ["reasoning", "analyzing", "reflecting"]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process (the API's and the worker's spans alike), into memory."""
    exporter = InMemorySpanExporter()
    assert tracing.configure(Settings.from_env({}), service="interlock-test", exporter=exporter)
    yield exporter
    tracing.shutdown()


def finished(spans: InMemorySpanExporter) -> list[ReadableSpan]:
    return list(spans.get_finished_spans())


def task_trace(
    spans: InMemorySpanExporter,
    task_id: str,
    *,
    tasks: int = 1,
    until: Callable[[list[ReadableSpan]], bool] | None = None,
) -> list[ReadableSpan]:
    """The spans of the trace that the submission of ``task_id`` started, once ``tasks`` task spans
    in it have ended (the task span ends after the row says the task ended), or ``until`` says so."""
    submission = wait_until(
        lambda: next((s for s in finished(spans) if attr(s, "interlock.task_id") == task_id and not s.parent), None),
        what=f"the submission span of {task_id}",
    )
    trace_id = submission.context.trace_id

    def trace() -> list[ReadableSpan] | None:
        found = [s for s in finished(spans) if s.context.trace_id == trace_id]
        if until is not None:
            return found if until(found) else None
        return found if sum(s.name.startswith("task ") for s in found) >= tasks else None

    return wait_until(trace, what=f"the task span of {task_id}")


def attr(span: ReadableSpan, name: str) -> Any:
    return (span.attributes or {}).get(name)


def named(trace: list[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return sorted((s for s in trace if s.name.startswith(prefix)), key=lambda s: s.start_time or 0)


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent else None


def test_a_task_is_one_trace_from_its_submission_to_each_llm_call(
    spans: InMemorySpanExporter, settings: Settings, make_stack: MakeStack
) -> None:
    stack = make_stack(settings)
    first = stack.submit(query="traced one", workflow="checkpointed")
    second = stack.submit(query="traced two", workflow="checkpointed")
    for task_id in (first, second):
        wait_for_state(stack.runtime.sessions, task_id, "SUCCESS")

    traces = {task_id: task_trace(spans, task_id) for task_id in (first, second)}
    assert traces[first][0].context.trace_id != traces[second][0].context.trace_id  # one trace per task
    for task_id, trace in traces.items():
        assert {attr(s, "interlock.task_id") for s in trace} == {task_id, None}  # only its own task's spans

        [submission] = named(trace, "POST /agent/execute")
        assert submission.kind == SpanKind.SERVER
        assert submission.parent is None
        assert attr(submission, "http.route") == "/agent/execute"
        assert attr(submission, "interlock.workflow") == "checkpointed"

        [queued] = named(trace, "queue ")
        [task] = named(trace, "task checkpointed")
        assert parent_of(queued) == parent_of(task) == submission.context.span_id
        assert attr(queued, "messaging.destination.name") == "default"
        assert submission.start_time <= queued.start_time <= queued.end_time <= task.start_time  # type: ignore[operator]
        assert attr(task, "interlock.attempt") == 1
        assert task.status.status_code != StatusCode.ERROR

        steps = named(trace, "step ")
        assert [attr(s, "interlock.step") for s in steps] == STAGES  # in order
        assert all(parent_of(s) == task.context.span_id for s in steps)
        assert all(task.start_time <= s.start_time and s.end_time <= task.end_time for s in steps)  # type: ignore[operator]

        calls = named(trace, "chat ")
        step_ids = {attr(s, "interlock.step"): s.context.span_id for s in steps}
        assert [attr(c, "interlock.step") for c in calls] == LLM_STAGES
        for call in calls:
            assert call.name == "chat test-model"
            assert call.kind == SpanKind.CLIENT
            assert parent_of(call) == step_ids[attr(call, "interlock.step")]
            assert attr(call, "gen_ai.operation.name") == "chat"
            assert attr(call, "gen_ai.system") == "openai"
            assert attr(call, "gen_ai.request.model") == "test-model"
            assert attr(call, "gen_ai.usage.input_tokens") > 0
            assert attr(call, "gen_ai.usage.output_tokens") > 0


def test_a_failed_step_is_marked_and_its_retry_stays_in_the_trace(
    spans: InMemorySpanExporter, settings: Settings, make_stack: MakeStack, fake_llm: Any
) -> None:
    stack = make_stack(settings.replace(max_retries=1))
    fake_llm.fail_next(1, status=500, match="[stage:analyzing]")
    task_id = stack.submit(query="traced retry", workflow="checkpointed")
    wait_for_state(stack.runtime.sessions, task_id, "SUCCESS")

    trace = task_trace(spans, task_id, tasks=2)
    first, second = named(trace, "task checkpointed")
    assert (attr(first, "interlock.attempt"), attr(second, "interlock.attempt")) == (1, 2)
    assert first.status.status_code == StatusCode.ERROR
    assert second.status.status_code != StatusCode.ERROR
    queued = named(trace, "queue ")
    assert len(queued) == 2
    assert queued[1].start_time >= first.end_time  # type: ignore[operator]  # the retry's wait, not the first run
    assert queued[1].end_time <= second.start_time  # type: ignore[operator]

    failed_step = next(s for s in named(trace, "step analyzing") if parent_of(s) == first.context.span_id)
    assert failed_step.status.status_code == StatusCode.ERROR
    assert any(event.name == "exception" for event in failed_step.events)
    failed_call = next(c for c in named(trace, "chat ") if parent_of(c) == failed_step.context.span_id)
    assert failed_call.status.status_code == StatusCode.ERROR
    assert "500" in (failed_call.status.description or "")
    # The retry resumes at the failed step: the steps before it are not run (nor traced) again.
    assert [attr(s, "interlock.step") for s in named(trace, "step ") if parent_of(s) == second.context.span_id] == [
        "analyzing",
        "acting",
        "reflecting",
        "completed",
    ]


def test_a_child_task_continues_its_parents_trace(
    spans: InMemorySpanExporter, settings: Settings, make_stack: MakeStack
) -> None:
    stack = make_stack(settings.replace(agent_modules="tests.workflows"))
    parent_id = stack.submit(query="traced parent", workflow="test_spawn", context={"child": "test_echo"})
    wait_for_state(stack.runtime.sessions, parent_id, "SUCCESS")

    # The parent suspends while its child runs and runs again when the child's end wakes it (or, had
    # the child ended before it could suspend, goes on in the same run): all in one trace.
    def parent_ended(trace: list[ReadableSpan]) -> bool:
        return any(s.name == "task test_spawn" and not attr(s, "interlock.suspended") for s in trace)

    trace = task_trace(spans, parent_id, until=parent_ended)
    parent_runs = named(trace, "task test_spawn")
    [child] = named(trace, "task test_echo")
    assert parent_of(child) == parent_runs[0].context.span_id  # spawned while the parent's run was current
    assert [attr(s, "interlock.suspended") for s in parent_runs] in ([True, None], [None])
    if len(parent_runs) == 2:
        assert parent_of(parent_runs[1]) == child.context.span_id  # woken by the child's end


def test_a_tool_call_has_its_span_under_the_task(
    spans: InMemorySpanExporter, settings: Settings, make_stack: MakeStack
) -> None:
    stack = make_stack(settings.replace(rate_limits="", tools_allow_hosts="127.0.0.1"))
    with FakeWebServer() as web:
        response = stack.client.simulate_post("/tools/scrape_url", json={"url": web.url("/page")})
        assert response.status_code == 202, response.text
        task_id = response.json["task_id"]
        wait_for_state(stack.runtime.sessions, task_id, "SUCCESS")

    trace = task_trace(spans, task_id)
    [submission] = named(trace, "POST /tools/{name}")
    [task] = named(trace, "task scrape_url")
    [call] = named(trace, "execute_tool ")
    assert parent_of(task) == submission.context.span_id
    assert parent_of(call) == task.context.span_id
    assert call.name == "execute_tool scrape_url"
    assert attr(call, "gen_ai.operation.name") == "execute_tool"
    assert attr(call, "gen_ai.tool.name") == "scrape_url"
    assert call.status.status_code != StatusCode.ERROR
