"""Durable steps: a stage's work is paid for once, whatever fails around it."""

from __future__ import annotations

import pytest

from tests.stack import Stack
from tests.support import stage_calls, wait_for_state

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

#: The reference article's six stages; the last checkpoint records the finished result.
STAGES = ["reasoning", "searching", "analyzing", "acting", "reflecting", "completed"]


def test_a_clean_run_records_six_stages_ending_with_completed(stack: Stack, fake_llm) -> None:
    task_id = stack.submit(query="cp-clean", workflow="checkpointed")
    task = wait_for_state(stack.runtime.sessions, task_id, "SUCCESS")

    history = stack.client.simulate_get(f"/agent/history/{task_id}").json
    assert [c["stage"] for c in history["checkpoints"]] == STAGES
    assert all(c["state"] == "completed" for c in history["checkpoints"])
    assert history["checkpoints"][-1]["stage"] == "completed"
    assert task.result["status"] == "completed"
    assert task.result["metadata"]["stages"] == STAGES
    assert set(task.result["result"]) == {"reasoning", "search_results", "analysis", "action_result", "reflection"}


def test_stage_failing_twice_does_not_repeat_earlier_stages(stack: Stack, fake_llm) -> None:
    fake_llm.fail_next(2, status=500, match="[stage:analyzing]")
    task_id = stack.submit(query="cp-1", workflow="checkpointed")
    task = wait_for_state(stack.runtime.sessions, task_id, "SUCCESS")

    assert task.attempts == 3
    assert stage_calls(fake_llm, "reasoning", "cp-1") == 1
    assert stage_calls(fake_llm, "analyzing", "cp-1", status=500) == 2
    assert stage_calls(fake_llm, "analyzing", "cp-1") == 1
    assert stage_calls(fake_llm, "reflecting", "cp-1") == 1

    history = stack.client.simulate_get(f"/agent/history/{task_id}").json
    assert [c["stage"] for c in history["checkpoints"]] == STAGES
    assert all(c["state"] == "completed" for c in history["checkpoints"])
    analyzing = history["checkpoints"][2]
    assert [f["attempt"] for f in analyzing["failures"]] == [1, 2]
    assert all("500" in f["error"] for f in analyzing["failures"])
    assert all(c["duration_ms"] is not None for c in history["checkpoints"])
    assert task.result["result"]["analysis"]["analysis"].startswith("fake-llm answer")


def test_failed_stage_records_error_and_traceback(settings, fake_llm, make_stack) -> None:
    stack = make_stack(settings.replace(max_retries=0))
    fake_llm.fail_next(1, status=500, match="[stage:analyzing]")
    task_id = stack.submit(query="cp-2", workflow="checkpointed")
    wait_for_state(stack.runtime.sessions, task_id, "FAILURE")
    history = stack.client.simulate_get(f"/agent/history/{task_id}").json
    states = {c["stage"]: c["state"] for c in history["checkpoints"]}
    assert states == {"reasoning": "completed", "searching": "completed", "analyzing": "failed"}
    failed = history["checkpoints"][-1]
    assert "500" in failed["error"]
    assert "Traceback" in failed["traceback"]


def test_resume_picks_up_at_the_failed_stage(settings, fake_llm, make_stack) -> None:
    stack = make_stack(settings.replace(max_retries=0))
    fake_llm.fail_next(1, status=500, match="[stage:analyzing]")
    task_id = stack.submit(query="cp-3", workflow="checkpointed")
    wait_for_state(stack.runtime.sessions, task_id, "FAILURE")

    resumed = stack.client.simulate_post(f"/agent/resume/{task_id}")
    assert resumed.status_code == 202, resumed.text
    assert resumed.json == {
        "task_id": task_id,
        "status": "queued",
        "resumed_from_stage": "analyzing",
        "status_url": f"/agent/status/{task_id}",
    }
    task = wait_for_state(stack.runtime.sessions, task_id, "SUCCESS")
    assert stage_calls(fake_llm, "reasoning", "cp-3") == 1
    assert stage_calls(fake_llm, "analyzing", "cp-3") == 1
    assert task.result["status"] == "completed"

    again = stack.client.simulate_post(f"/agent/resume/{task_id}")
    assert again.status_code == 409
    assert "SUCCESS" in again.json["description"]
    unknown = stack.client.simulate_post("/agent/resume/00000000-0000-0000-0000-000000000000")
    assert unknown.status_code == 404


def test_resume_of_a_running_workflow_is_409(stack: Stack, fake_llm) -> None:
    fake_llm.hang_next(1, seconds=3, match="[stage:reasoning] Query: cp-4\n")
    task_id = stack.submit(query="cp-4", workflow="checkpointed")
    wait_for_state(stack.runtime.sessions, task_id, "PROCESSING")
    response = stack.client.simulate_post(f"/agent/resume/{task_id}")
    assert response.status_code == 409
    assert "PROCESSING" in response.json["description"]
    wait_for_state(stack.runtime.sessions, task_id, "SUCCESS")


def test_stage_time_limit_interrupts_and_retries_the_stage(settings, fake_llm, make_stack) -> None:
    stack = make_stack(settings.replace(stage_time_limit=1.0, llm_timeout=10.0))
    fake_llm.hang_next(1, seconds=4, match="[stage:analyzing]")
    task_id = stack.submit(query="cp-5", workflow="checkpointed")
    task = wait_for_state(stack.runtime.sessions, task_id, "SUCCESS", timeout=30)
    history = stack.client.simulate_get(f"/agent/history/{task_id}").json
    analyzing = next(c for c in history["checkpoints"] if c["stage"] == "analyzing")
    assert "timed out" in analyzing["failures"][0]["error"] or "StageTimeLimit" in analyzing["failures"][0]["error"]
    assert task.attempts == 2
    assert stage_calls(fake_llm, "reasoning", "cp-5") == 1


def test_cli_history_and_resume(settings, fake_llm, tmp_path, make_stack) -> None:
    import subprocess
    import sys

    from tests.processes import ROOT, Proc, base_env, wait_http
    from tests.support import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = base_env(settings.replace(max_retries=0).to_env())
    stack = make_stack(settings.replace(max_retries=0))
    with Proc(["api", "--bind", f"127.0.0.1:{port}", "--workers", "1"], env=env, log=tmp_path / "api.log") as api:
        wait_http(f"{url}/healthz", proc=api)
        fake_llm.fail_next(1, status=500, match="[stage:reflecting]")
        task_id = stack.submit(query="cp-6", workflow="checkpointed")
        wait_for_state(stack.runtime.sessions, task_id, "FAILURE")

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "interlock.cli", *args, "--url", url],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=30,
            )

        history = cli("history", task_id)
        assert history.returncode == 0
        assert '"reflecting"' in history.stdout
        assert '"failed"' in history.stdout
        resumed = cli("resume", task_id)
        assert resumed.returncode == 0
        assert '"resumed_from_stage": "reflecting"' in resumed.stdout
        wait_for_state(stack.runtime.sessions, task_id, "SUCCESS")
        refused = cli("resume", task_id)
        assert refused.returncode == 1
        assert "409" in refused.stderr
