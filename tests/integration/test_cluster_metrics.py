"""The worker host's /metrics also describes the cluster: queue depths, breakers, LLM spend."""

from __future__ import annotations

import pytest
import requests

from actors.runtime import Runtime
from models.breakers import record_failure
from tests.processes import Proc, base_env, wait_http
from tests.support import free_port, parse_metrics, sample, wait_for_state, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


def test_queue_depth_breaker_state_and_llm_cost(settings, fake_llm, tmp_path, make_stack) -> None:
    port = free_port()
    settings = settings.replace(
        worker_metrics_port=port,
        worker_metrics_host="127.0.0.1",
        rate_limits="",
        llm_prices="test-model=2/4",
    )
    stack = make_stack(settings, worker=False)
    runtime = Runtime.open(settings)
    try:
        waiting = [stack.submit(query=f"nobody serves research {n}", workflow="research") for n in range(3)]
        with runtime.sessions.begin() as session:
            record_failure(session, "api.example.test", probe=False, threshold=1, reset=600)
        env = base_env(settings.to_env())
        with Proc(["worker", "--queues", "default", "--processes", "1"], env=env, log=tmp_path / "w.log") as worker:
            url = f"http://127.0.0.1:{port}/metrics"
            wait_http(url, proc=worker)
            task = wait_for_state(stack.runtime.sessions, stack.submit(query="priced"), "SUCCESS", timeout=30)
            usage = task.result["metadata"]["usage"]
            expected = (usage["prompt_tokens"] * 2 + usage["completion_tokens"] * 4) / 1e6

            def scraped() -> dict | None:
                parsed = parse_metrics(requests.get(url, timeout=5).text)
                return parsed if sample(parsed, "interlock_worker_llm_cost_usd_total", model="test-model") else None

            parsed = wait_until(scraped, timeout=10, what="the cost metric")
            assert sample(parsed, "interlock_worker_llm_cost_usd_total", model="test-model") == pytest.approx(expected)
            assert sample(parsed, "interlock_queue_messages", queue="research", kind="ready") == len(waiting)
            assert sample(parsed, "interlock_queue_messages", queue="default", kind="ready") == 0
            assert sample(parsed, "interlock_circuit_breaker_state", target="api.example.test") == 2
            assert sample(parsed, "interlock_circuit_breaker_failures", target="api.example.test") >= 1
    finally:
        runtime.close()
