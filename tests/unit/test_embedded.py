"""The embedded defaults (SQLite + in-process broker) are a product feature: same behaviour."""

from __future__ import annotations

import pytest

from interlock.settings import Settings
from models.migrations import upgrade
from tests.support import events, wait_for_state


@pytest.fixture
def embedded(tmp_path, fake_llm) -> Settings:
    settings = Settings.from_env(
        {},
        database_url=f"sqlite:///{tmp_path / 'embedded.db'}",
        openai_base_url=fake_llm.base_url,
        openai_api_key="sk-test",
        min_backoff=0.2,
        lease_seconds=3,
        maintenance_interval=0.2,
        worker_threads=2,
        auth="off",
    )
    upgrade(settings)
    return settings


def test_task_succeeds_on_sqlite_and_the_stub_broker(embedded, fake_llm, make_stack) -> None:
    stack = make_stack(embedded)
    fake_llm.fail_next(1, status=500)
    task_id = stack.submit(query="embedded")
    task = wait_for_state(stack.runtime.sessions, task_id, "SUCCESS")
    assert task.attempts == 2
    states = [e.state for e in events(stack.runtime.sessions, task_id) if e.kind == "state"]
    assert states == ["PENDING", "PROCESSING", "RETRY", "PROCESSING", "SUCCESS"]
