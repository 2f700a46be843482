"""Per-tenant concurrency caps and monthly token budgets (`interlock tenants set`)."""

from __future__ import annotations

import json
import subprocess
import sys
from itertools import combinations

import pytest

from interlock.settings import Settings
from models.base import as_utc
from models.security import create_key
from models.tenants import add_usage, set_limits, tokens_used
from tests.processes import ROOT, base_env
from tests.support import get_task, wait_for_state

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


def _key(sessions, tenant: str) -> dict[str, str]:
    with sessions.begin() as session:
        return {"Authorization": f"Bearer {create_key(session, tenant=tenant, scopes=['submit', 'read']).key}"}


def test_tasks_over_the_concurrency_cap_wait_their_turn(settings: Settings, fake_llm, make_stack) -> None:
    settings = settings.replace(auth="on", worker_threads=4)
    fake_llm.latency = 0.3
    done = subprocess.run(
        [sys.executable, "-m", "interlock.cli", "tenants", "set", "acme", "--max-concurrency", "1"],
        env=base_env(settings.to_env()),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["max_concurrency"] == 1
    stack = make_stack(settings)
    headers = _key(stack.runtime.sessions, "acme")
    ids = []
    for n in range(4):
        response = stack.client.simulate_post("/agent/execute", json={"query": f"capped {n}"}, headers=headers)
        assert response.status_code == 202, response.text
        ids.append(response.json["task_id"])
    tasks = [wait_for_state(stack.runtime.sessions, task_id, "SUCCESS", timeout=60) for task_id in ids]
    spans = [(as_utc(t.started_at), as_utc(t.finished_at)) for t in tasks]
    for (a_start, a_end), (b_start, b_end) in combinations(spans, 2):
        assert a_end <= b_start or b_end <= a_start, "two tasks of a tenant capped at 1 ran at once"
    with stack.runtime.sessions() as session:
        assert tokens_used(session, "acme") > 0  # their LLM tokens were counted


def test_over_budget_submissions_answer_429_and_running_workflows_stop(
    settings: Settings, fake_llm, make_stack
) -> None:

    settings = settings.replace(auth="on", max_retries=0)
    api = make_stack(settings, worker=False)
    with api.runtime.sessions.begin() as session:
        set_limits(session, "acme", max_concurrency=None, monthly_tokens=1000)
    headers = _key(api.runtime.sessions, "acme")
    queued = api.client.simulate_post("/agent/execute", json={"query": "under budget"}, headers=headers)
    assert queued.status_code == 202, queued.text
    with api.runtime.sessions.begin() as session:
        add_usage(session, "acme", 1000)  # spent elsewhere meanwhile

    refused = api.client.simulate_post("/agent/execute", json={"query": "over budget"}, headers=headers)
    assert refused.status_code == 429, refused.text
    assert "monthly token budget" in refused.json["description"]
    assert "1000 of 1000" in refused.json["description"]
    other = _key(api.runtime.sessions, "other")
    assert api.client.simulate_post("/agent/execute", json={"query": "x"}, headers=other).status_code == 202

    make_stack(settings.replace(worker_threads=2))  # a worker starts
    task = wait_for_state(api.runtime.sessions, queued.json["task_id"], "FAILURE", timeout=60)
    assert task.error is not None
    assert "monthly token budget" in task.error
    assert get_task(api.runtime.sessions, queued.json["task_id"]) is not None
