"""With INTERLOCK_LOG_FORMAT=json every line is a JSON object, stamped with the task it serves."""

from __future__ import annotations

import json

import pytest

from tests.processes import Proc, base_env
from tests.support import wait_for_state, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


def test_worker_logs_are_json_with_the_task_id(settings, fake_llm, tmp_path, make_stack) -> None:
    settings = settings.replace(log_format="json", max_retries=1, min_backoff=0.1, worker_metrics_port=0)
    fake_llm.fail_next(5, status=500)
    stack = make_stack(settings, worker=False)
    with Proc(
        ["worker", "--processes", "1", "--threads", "1"], env=base_env(settings.to_env()), log=tmp_path / "w.log"
    ) as worker:
        task_id = stack.submit(query="log me")
        wait_for_state(stack.runtime.sessions, task_id, "FAILURE", timeout=30)

        def task_lines() -> list[dict] | None:
            lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
            mine = [line for line in lines if line.get("task_id") == task_id]
            return mine if len(mine) >= 2 else None

        mine = wait_until(task_lines, timeout=10, what="log lines of the task")
        assert {"time", "level", "logger", "message"} <= set(mine[0])
        assert any(line["level"] == "ERROR" for line in mine)  # the failure, with its traceback
        # The run that will be retried says so; the last one ends the task at INFO.
        ends = wait_until(lambda: _outcome_lines(worker.output(), task_id, "FAILURE"), timeout=10, what="FAILURE")
        retries = _outcome_lines(worker.output(), task_id, "RETRY")
        assert [(line["level"], line["attempts"]) for line in retries] == [("WARNING", 1)]
        assert [(line["level"], line["attempts"]) for line in ends] == [("INFO", 2)]
        for line in worker.output().splitlines():
            assert line.startswith("{"), f"not JSON: {line}"
        for line in map(json.loads, worker.output().splitlines()):
            if task_id in line["message"]:
                assert line.get("task_id") == task_id, line


def test_a_successful_task_logs_no_warnings(settings, fake_llm, tmp_path, make_stack) -> None:
    """A healthy run is quiet: no warning per task (Dramatiq's Results used to log one for each)."""
    settings = settings.replace(log_format="json", worker_metrics_port=0)  # no port clash with other runs
    stack = make_stack(settings, worker=False)
    with Proc(
        ["worker", "--processes", "1", "--threads", "2"], env=base_env(settings.to_env()), log=tmp_path / "w.log"
    ) as worker:
        task_ids = [stack.submit(query=f"quiet {i}") for i in range(3)]
        for task_id in task_ids:
            wait_for_state(stack.runtime.sessions, task_id, "SUCCESS", timeout=30)
        lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
        assert lines, "the worker wrote no JSON log lines at all"
        noisy = [line for line in lines if line["level"] in ("WARNING", "ERROR", "CRITICAL")]
        assert noisy == [], noisy


def _outcome_lines(output: str, task_id: str, state: str) -> list[dict]:
    """The lines that say how a run of ``task_id`` ended in ``state``."""
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("task_id") == task_id and line.get("state") == state]


def test_each_finished_task_logs_one_info_line_with_its_fields(settings, fake_llm, tmp_path, make_stack) -> None:
    """As Celery's "Task … succeeded in 0.41s": task id, workflow, state, attempts and duration as fields."""
    settings = settings.replace(log_format="json", worker_metrics_port=0)  # no port clash with other runs
    stack = make_stack(settings, worker=False)
    with Proc(
        ["worker", "--processes", "1", "--threads", "2"], env=base_env(settings.to_env()), log=tmp_path / "w.log"
    ) as worker:
        task_ids = [stack.submit(query=f"done {i}") for i in range(2)]
        for task_id in task_ids:
            wait_for_state(stack.runtime.sessions, task_id, "SUCCESS", timeout=30)
        for task_id in task_ids:
            lines = wait_until(
                lambda task_id=task_id: _outcome_lines(worker.output(), task_id, "SUCCESS"),
                timeout=10,
                what=f"the SUCCESS line of {task_id}",
            )
            assert len(lines) == 1, lines
            line = lines[0]
            assert line["level"] == "INFO"
            assert (line["workflow"], line["attempts"]) == ("agent", 1)
            assert isinstance(line["duration"], float)
            assert line["duration"] > 0
            assert line["message"] == f"task {task_id} (agent) SUCCESS in {line['duration']:.2f}s, attempt 1"
