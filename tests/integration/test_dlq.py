"""Dead letters: a poisoned task is listed, replayed after its cause is fixed, and ends SUCCESS."""

from __future__ import annotations

import pytest

from tests.processes import Proc, base_env
from tests.support import events, wait_for_state, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.slow]


def _listed(stack) -> dict[str, dict]:
    body = stack.client.simulate_get("/dlq").json
    return {m["task_id"]: {**m, "queue": q["queue"]} for q in body["queues"] for m in q["messages"]}


def test_replayed_poison_task_succeeds_with_one_history(settings, tmp_path, make_stack) -> None:
    settings = settings.replace(agent_modules="tests.workflows", max_deliveries=2, lease_seconds=1.5)
    stack = make_stack(settings, worker=False)
    flag = tmp_path / "fixed"
    with Proc(["worker", "--processes", "1", "--threads", "2"], env=base_env(settings.to_env()), log=tmp_path / "w"):
        poison = stack.submit(query="die", workflow="test_self_kill", context={"fixed_flag": str(flag)})
        doomed = stack.submit(query="die too", workflow="test_self_kill", context={"fixed_flag": str(flag)})
        for task_id in (poison, doomed):
            wait_for_state(stack.runtime.sessions, task_id, "FAILURE", timeout=90)

        def both_listed() -> dict[str, dict] | None:
            found = _listed(stack)
            return found if {poison, doomed} <= set(found) else None

        listed = wait_until(
            both_listed,
            timeout=15,
            what="both tasks in GET /dlq",
        )
        entry = listed[poison]
        assert entry["queue"] == "default"
        assert entry["actor"] == "interlock.test_self_kill"
        assert entry["attempts"] >= 3
        assert "INTERLOCK_MAX_DELIVERIES=2" in entry["error"]
        assert entry["dead_at"]
        assert _listed(stack) == listed  # listing leaves them in place

        purged = stack.client.simulate_delete(f"/dlq/{doomed}")
        assert purged.status_code == 200, purged.text
        assert set(_listed(stack)) == {poison}

        flag.write_text("fixed")
        replay = stack.client.simulate_post(f"/dlq/{poison}/replay")
        assert replay.status_code == 202, replay.text
        assert replay.json["queue"] == "default"
        task = wait_for_state(stack.runtime.sessions, poison, {"SUCCESS", "FAILURE"}, timeout=60)
        assert task.state == "SUCCESS", task.error
        assert task.id == poison
        assert task.result == {"status": "success", "result": "survived"}
        assert _listed(stack) == {}
        assert stack.client.simulate_post(f"/dlq/{poison}/replay").status_code == 404
        assert stack.client.simulate_delete(f"/dlq/{doomed}").status_code == 404

        history = events(stack.runtime.sessions, poison)
        assert [e.id for e in history] == sorted(e.id for e in history)
        states = [e.state for e in history if e.kind == "state"]
        assert states[0] == "PENDING"
        assert states[-1] == "SUCCESS"
        failed_at = states.index("FAILURE")
        assert states[failed_at + 1 :] == ["PENDING", "PROCESSING", "SUCCESS"]
        assert states[:failed_at].count("PROCESSING") >= 2  # the last start found it exhausted
        replayed = [e for e in history if e.kind == "state" and e.state == "PENDING"][1]
        assert replayed.data["reason"] == "replayed from the dead-letter queue"
