"""`interlock cancel` and `interlock dlq` against a real API process, as an operator uses them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.processes import ROOT, Proc, base_env, wait_http
from tests.support import free_port, get_task, wait_for_state, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


def _cli(env: dict[str, str], url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "interlock.cli", *args, "--url", url],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cancel_and_dead_letters_from_the_command_line(settings, fake_llm, tmp_path, make_stack) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = base_env(settings.to_env())
    queued_only = make_stack(settings, worker=False)
    with Proc(["api", "--bind", f"127.0.0.1:{port}", "--workers", "1"], env=env, log=tmp_path / "api.log") as api:
        wait_http(f"{url}/healthz", proc=api)

        queued = queued_only.submit(query="never mind")
        cancelled = _cli(env, url, "cancel", queued)
        assert cancelled.returncode == 0, cancelled.stderr
        assert "CANCELLED" in cancelled.stdout
        assert get_task(queued_only.runtime.sessions, queued).state == "CANCELLED"
        again = _cli(env, url, "cancel", queued)
        assert again.returncode == 1
        assert "409" in again.stderr

        fake_llm.fail_next(1, status=401)
        stack = make_stack(settings)
        doomed = stack.submit(query="refused")
        wait_for_state(stack.runtime.sessions, doomed, "FAILURE")

        def listed() -> dict | None:
            out = _cli(env, url, "dlq", "list")
            assert out.returncode == 0, out.stderr
            body = json.loads(out.stdout)
            queues = {q["queue"]: q["messages"] for q in body["queues"]}
            return queues if any(m["task_id"] == doomed for m in queues.get("default", [])) else None

        queues = wait_until(listed, timeout=15, what="the dead letter in `interlock dlq list`")
        entry = next(m for m in queues["default"] if m["task_id"] == doomed)
        assert "401" in entry["error"]
        assert entry["attempts"] == 1

        purged = _cli(env, url, "dlq", "purge", doomed)
        assert purged.returncode == 0, purged.stderr
        after = json.loads(_cli(env, url, "dlq", "list").stdout)
        assert all(m["task_id"] != doomed for q in after["queues"] for m in q["messages"])
