"""What stops a running task's wait for a call: its limits and its cancellation (no services needed)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest

from actors.errors import SoftTimeLimitExceeded, StageTimeLimitExceeded, TaskCancelled, TimeLimitExceeded
from actors.io_loop import IOLoop
from actors.running import RunningTask, RunningTasks, call_timeout, interruptible, running_as


def _task(*, hard: float = 60.0, soft: float = 60.0) -> RunningTask:
    return RunningTask.starting_now("t-1", time_limit=hard, soft_time_limit=soft)


def test_a_finished_call_gives_its_result_or_its_own_error() -> None:
    task = _task()
    done: Future[int] = Future()
    done.set_result(7)
    assert task.wait(done, what="call") == 7
    failed: Future[int] = Future()
    failed.set_exception(TimeoutError("the call's own timeout"))
    with pytest.raises(TimeoutError, match="own timeout"):  # not mistaken for the task's limit
        task.wait(failed, what="call")


def test_outside_a_worker_a_wait_has_no_limit() -> None:
    task = RunningTask("t-0")  # what a workflow called directly (a test, a benchmark) runs under
    call: Future[int] = Future()
    threading.Timer(0.1, call.set_result, (3,)).start()
    assert task.wait(call, what="call") == 3
    assert call_timeout(10.0) == 10.0


def test_the_hard_limit_ends_the_wait_and_abandons_the_call() -> None:
    task = _task(hard=0.3)
    call: Future[int] = Future()
    started = time.monotonic()
    with pytest.raises(
        TimeLimitExceeded, match="time limit exceeded: the task ran for its limit of 0.3s during its LLM call"
    ):
        task.wait(call, what="LLM call")
    assert time.monotonic() - started >= 0.25  # the call never answers: only the limit ended the wait
    assert call.cancelled()
    with pytest.raises(TimeLimitExceeded):
        task.check()


def test_the_soft_limit_ends_a_wait_only_where_the_workflow_can_use_it() -> None:
    task = _task(hard=1.0, soft=0.2)
    with task.until_soft_limit(), pytest.raises(SoftTimeLimitExceeded):
        task.wait(Future(), what="call")
    with pytest.raises(TimeLimitExceeded):  # outside: the call may use the time up to the hard limit
        task.wait(Future(), what="call")


def test_a_stage_deadline_before_the_limits_wins() -> None:
    task = _task()
    with pytest.raises(StageTimeLimitExceeded):
        task.wait(Future(), what="call", stage_deadline=time.monotonic() + 0.1)


def test_cancelling_wakes_the_waiting_thread_at_once() -> None:
    task = _task()
    registry = RunningTasks()
    registry.add(task)
    threading.Timer(0.2, registry.cancel, (["t-1", "not-running-here"],)).start()
    with pytest.raises(TaskCancelled):  # the call never answers: only the cancellation ends the wait
        task.wait(Future(), what="call")
    registry.discard(task)
    assert registry.ids() == []


def test_call_timeouts_are_cut_to_the_time_left() -> None:
    assert call_timeout(10.0) == 10.0  # no running task
    with running_as(_task(hard=60.0)):
        # The time left and a little margin: 60.5 s at most, and most of it (whatever the machine's load).
        assert 30.0 < call_timeout(100.0) <= 60.5
        assert call_timeout(1.0) == 1.0


def test_a_blocking_call_runs_in_a_helper_thread_that_the_limit_stops_waiting_for() -> None:
    io = IOLoop(helper_threads=2)
    release = threading.Event()
    try:
        task = RunningTask.starting_now("t-2", time_limit=0.3, soft_time_limit=0.3, io=io)
        with running_as(task):
            assert interruptible("call", lambda: threading.current_thread().name).startswith("interlock-io")
            with pytest.raises(TimeLimitExceeded):
                interruptible("call", release.wait, 30)
    finally:
        release.set()
        io.close()
