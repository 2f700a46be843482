"""The real commands as a user runs them: `interlock dev`, `interlock api` + `interlock worker`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import requests

from models.tasks import TaskState
from tests.processes import ROOT, Proc, base_env, wait_http
from tests.support import free_port, get_task, wait_for_state, wait_until


def _wait_success(url: str, task_id: str, timeout: float = 60) -> dict:
    def finished() -> dict | None:
        body = requests.get(f"{url}/agent/status/{task_id}", timeout=5).json()
        return body if body["state"] in {"SUCCESS", "FAILURE"} else None

    body = wait_until(finished, timeout=timeout, interval=0.2, what=f"task {task_id}")
    assert body["state"] == "SUCCESS", body
    return body


def test_dev_runs_a_task_to_success_on_embedded_defaults(tmp_path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with Proc(["dev", "--port", str(port)], env=base_env(), log=tmp_path / "dev.log", cwd=tmp_path) as dev:
        wait_http(f"{url}/healthz", proc=dev)
        assert "in-process broker" in dev.output()
        assert "offline stand-in" in dev.output()
        submitted = requests.post(f"{url}/agent/execute", json={"query": "hello dev"}, timeout=5)
        assert submitted.status_code == 202
        body = _wait_success(url, submitted.json()["task_id"])
        assert body["result"]["metadata"]["model"] == "interlock-offline-standin"
        assert "offline stand-in model" in body["result"]["result"]

        follow = subprocess.run(
            [sys.executable, "-m", "interlock.cli", "submit", "follow me", "--follow", "--url", url],
            env=base_env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert follow.returncode == 0, follow.stdout + follow.stderr
        assert "100%" in follow.stdout
        assert "SUCCESS" in follow.stdout
    assert (tmp_path / "interlock.db").exists()


def test_dev_honours_an_explicit_interlock_auth_on(tmp_path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**base_env(), "INTERLOCK_AUTH": "on"}
    with Proc(["dev", "--port", str(port)], env=env, log=tmp_path / "dev.log", cwd=tmp_path) as dev:
        wait_http(f"{url}/healthz", proc=dev)
        assert "AUTHENTICATION IS OFF" not in dev.output()
        assert "Authentication is on" in dev.output()
        assert requests.get(f"{url}/keys", timeout=5).status_code == 401
        assert requests.post(f"{url}/agent/execute", json={"query": "x"}, timeout=5).status_code == 401
        made = subprocess.run(
            [sys.executable, "-m", "interlock.cli", "keys", "create", "--tenant", "me", "--scope", "admin", "--json"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        key = json.loads(made.stdout)["key"]
        listed = requests.get(f"{url}/keys", headers={"Authorization": f"Bearer {key}"}, timeout=5)
        assert listed.status_code == 200, listed.text


@pytest.mark.rabbitmq
@pytest.mark.postgres
def test_api_and_worker_processes_on_rabbitmq_and_postgres(settings, tmp_path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = base_env(settings.to_env())
    with (
        Proc(["api", "--bind", f"127.0.0.1:{port}", "--workers", "1"], env=env, log=tmp_path / "api.log") as api,
        Proc(["worker", "--processes", "1", "--threads", "2"], env=env, log=tmp_path / "worker.log"),
    ):
        wait_http(f"{url}/healthz", proc=api)
        ready = requests.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        submitted = requests.post(f"{url}/agent/execute", json={"query": "on the real stack"}, timeout=5)
        assert submitted.status_code == 202
        body = _wait_success(url, submitted.json()["task_id"])
        assert body["result"]["metadata"]["model"] == "test-model"


@pytest.mark.rabbitmq
@pytest.mark.postgres
def test_sigkilled_worker_process_loses_no_task(settings, fake_llm, tmp_path, make_stack) -> None:
    fake_llm.latency = 1.0
    stack = make_stack(settings, worker=False)
    env = base_env(settings.to_env())
    with Proc(["worker", "--processes", "1", "--threads", "2"], env=env, log=tmp_path / "worker.log") as worker:
        task_ids = [stack.submit(query=f"survive {n}") for n in range(4)]

        def running_owner() -> str | None:
            for task_id in task_ids:
                task = get_task(stack.runtime.sessions, task_id)
                if task and task.state == TaskState.PROCESSING and task.lease_owner:
                    return task.lease_owner
            return None

        owner = wait_until(running_owner, timeout=30, what="a task in progress")
        victim = int(owner.split(":")[1])
        os.kill(victim, signal.SIGKILL)
        for task_id in task_ids:
            task = wait_for_state(stack.runtime.sessions, task_id, {"SUCCESS", "FAILURE"}, timeout=60)
            assert task.state == "SUCCESS", (task.error, worker.output()[-3000:])
        assert "died with exit code" in worker.output()
        killed = [get_task(stack.runtime.sessions, t) for t in task_ids]
        assert any(t is not None and t.attempts >= 2 for t in killed)
