"""``interlock.client`` against a real ``interlock api`` process and a real worker, as a user's program uses it.

Both flavours: submit → stream → result, idempotency keys, cancel, failures and timeouts as typed
errors, error answers mapped (401, 403, 404, 409, 413, 422, 429), a stream that resumes with
``Last-Event-ID`` when its connection drops, and the ``interlock result`` command on top.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from interlock.client import (
    AsyncClient,
    Client,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ResultTimeout,
    TaskCancelled,
    TaskFailed,
    Unauthorized,
    UnprocessableEntity,
)
from interlock.settings import Settings
from models.security import create_key
from models.tenants import add_usage, set_limits
from tests.processes import ROOT, Proc, base_env, wait_http
from tests.stack import MakeStack, Stack
from tests.support import events, free_port, wait_for_state

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

AGENT_STEPS = ["initializing", "reasoning", "tool_execution", "synthesis"]


@dataclass
class Api:
    url: str
    key: str
    stack: Stack  # the worker, and the database for the test's own checks

    def new_key(self, tenant: str, scopes: list[str]) -> str:
        with self.stack.runtime.sessions.begin() as session:
            return create_key(session, tenant=tenant, scopes=scopes).key


@pytest.fixture
def api(settings: Settings, tmp_path: Path, make_stack: MakeStack) -> Iterator[Api]:
    """``interlock api`` on the real services with authentication on, a worker, and a submit+read key."""
    settings = settings.replace(auth="on", max_body_bytes=4096)
    stack = make_stack(settings)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = base_env(settings.to_env())
    with Proc(["api", "--bind", f"127.0.0.1:{port}", "--workers", "1"], env=env, log=tmp_path / "api.log") as proc:
        wait_http(f"{url}/healthz", proc=proc)
        api = Api(url, "", stack)
        api.key = api.new_key("acme", ["submit", "read"])
        yield api


def test_submit_stream_result_and_idempotency_keys(api: Api) -> None:
    with Client(api.url, api.key) as client:
        task = client.submit("stream me", context={"user": "u1"}, idempotency_key="order-1")
        assert not task.replayed
        assert task.status_url == f"/agent/status/{task.task_id}"

        streamed = list(task.stream())
        assert [e.step for e in streamed if e.kind == "progress"] == AGENT_STEPS
        assert [e.id for e in streamed] == [e.id for e in events(api.stack.runtime.sessions, task.task_id)]
        assert streamed[0].state == "PENDING"
        assert streamed[-1].finished
        assert streamed[-1].state == "SUCCESS"

        result = task.result(timeout=30)
        assert result["result"].startswith("fake-llm answer")
        status = task.status()
        assert status.state == "SUCCESS"
        assert status.progress == 100
        assert status.result == result
        assert status.finished_at is not None

        again = client.submit("stream me", context={"user": "u1"}, idempotency_key="order-1")
        assert again.task_id == task.task_id
        assert again.replayed
        with pytest.raises(UnprocessableEntity) as reused:
            client.submit("another query", idempotency_key="order-1")
        assert reused.value.status == 422
        assert reused.value.title == "Idempotency-Key reused"


def test_cancel_timeout_and_failure_are_typed(api: Api, fake_llm) -> None:
    fake_llm.hang_next(1, seconds=30, match="Analyze this query: slow")
    with Client(api.url, api.key) as client:
        slow = client.submit("slow")
        with pytest.raises(ResultTimeout) as waited:
            slow.result(timeout=1)
        assert isinstance(waited.value, TimeoutError)
        assert waited.value.task_id == slow.task_id

        cancelled = slow.cancel()
        assert cancelled.task_id == slow.task_id
        assert cancelled.state in {"CANCELLING", "CANCELLED"}
        with pytest.raises(TaskCancelled) as ended:
            slow.result(timeout=30)
        assert ended.value.state == "CANCELLED"
        assert list(slow.stream())[-1].state == "CANCELLED"
        with pytest.raises(Conflict) as again:
            slow.cancel()
        assert again.value.status == 409

        fake_llm.fail_next(1, status=401)
        doomed = client.submit("refused")
        with pytest.raises(TaskFailed) as failed:
            doomed.result(timeout=30)
        assert failed.value.state == "FAILURE"
        assert "401" in (failed.value.error or "")


def test_async_client_does_the_same(api: Api, fake_llm) -> None:
    async def scenario() -> None:
        async with AsyncClient(api.url, api.key) as client:
            task = await client.submit("async stream", idempotency_key="async-1")
            streamed = [event async for event in task.stream()]
            assert [e.step for e in streamed if e.kind == "progress"] == AGENT_STEPS
            assert streamed[-1].state == "SUCCESS"
            result = await task.result(timeout=30)
            assert result == (await task.status()).result
            again = await client.submit("async stream", idempotency_key="async-1")
            assert (again.task_id, again.replayed) == (task.task_id, True)

            fake_llm.hang_next(1, seconds=30, match="Analyze this query: async slow")
            slow = await client.submit("async slow")
            with pytest.raises(ResultTimeout):
                await slow.result(timeout=1)
            assert (await slow.cancel()).state in {"CANCELLING", "CANCELLED"}
            with pytest.raises(TaskCancelled):
                await slow.result(timeout=30)
            with pytest.raises(NotFound):
                await client.status("no-such-task")

    asyncio.run(scenario())


def test_error_answers_become_typed_errors(api: Api) -> None:
    with Client(api.url, "il_not-a-real-key") as stranger, pytest.raises(Unauthorized) as refused:
        stranger.submit("who am I")
    assert refused.value.status == 401
    assert "il_not-a-real-key" not in str(refused.value)

    reader = api.new_key("acme", ["read"])
    with Client(api.url, reader) as client:
        assert reader not in repr(client)
        with pytest.raises(Forbidden) as scope:
            client.submit("not allowed")
        assert "submit" in scope.value.description

    with Client(api.url, api.key) as client:
        for call in (client.status, client.result, client.cancel, lambda i: list(client.stream(i))):
            with pytest.raises(NotFound) as unknown:
                call("no-such-task")
            assert unknown.value.title == "Unknown task"
        with pytest.raises(PayloadTooLarge):
            client.submit("x" * 5000)

        with api.stack.runtime.sessions.begin() as session:
            set_limits(session, "acme", max_concurrency=None, monthly_tokens=1000)
            add_usage(session, "acme", 1000)
        with pytest.raises(RateLimited) as budget:
            client.submit("over budget")
        assert budget.value.status == 429
        assert "monthly token budget" in budget.value.description


class CuttingProxy:
    """A TCP proxy to the API that drops each of the first ``cuts`` connections once an SSE event went through."""

    def __init__(self, target_port: int, cuts: int) -> None:
        self.target_port = target_port
        self.cuts = cuts
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            cut = self.connections <= self.cuts
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(downstream, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, downstream, cut), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, cut: bool) -> None:
        seen = b""
        try:
            while data := source.recv(65536):
                sink.sendall(data)
                seen += data
                if cut and b"\nid: " in seen:
                    break  # one event through: drop the connection mid-stream
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.listener.close()


def test_a_dropped_stream_resumes_without_losing_or_repeating_events(api: Api, fake_llm, caplog) -> None:
    fake_llm.latency = 0.3  # the task's events spread over several connections
    caplog.set_level(logging.INFO, logger="interlock.client")
    port = int(api.url.rsplit(":", 1)[1])
    proxy = CuttingProxy(port, cuts=4)
    try:
        with Client(f"http://127.0.0.1:{proxy.port}", api.key) as client:
            task = client.submit("cut me")
            streamed = list(task.stream())
    finally:
        proxy.close()
    resumed = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(resumed) >= 2, proxy.connections
    assert api.key not in caplog.text
    assert [e.id for e in streamed] == [e.id for e in events(api.stack.runtime.sessions, task.task_id)]
    assert streamed[-1].state == "SUCCESS"


def test_result_command_waits_and_exits_by_the_outcome(api: Api, fake_llm) -> None:
    env = base_env({"INTERLOCK_API_KEY": api.key})

    def interlock_result(task_id: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "interlock.cli", "result", task_id, "--timeout", "30", "--url", api.url],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=90,
        )

    with Client(api.url, api.key) as client:
        done = interlock_result(client.submit("print me").task_id)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["result"].startswith("fake-llm answer")

        fake_llm.fail_next(1, status=401)
        doomed = client.submit("refused")
        wait_for_state(api.stack.runtime.sessions, doomed.task_id, "FAILURE")
        failed = interlock_result(doomed.task_id)
        assert failed.returncode == 1
        assert json.loads(failed.stdout)["state"] == "FAILURE"
