"""Server-Sent Events of a task's progress, ``Last-Event-ID`` resumption, ``?wait=N``, and many streams."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests

from tests.processes import Proc, base_env, wait_http
from tests.support import free_port, get_task, parse_sse, wait_for_state, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

AGENT_STEPS = ["initializing", "reasoning", "tool_execution", "synthesis"]


class SseReader:
    """Reads frames from a streaming ``requests`` response as they arrive."""

    def __init__(self, response: requests.Response) -> None:
        self.response = response
        self.buffer = ""
        self.chunks = response.iter_content(chunk_size=None, decode_unicode=True)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for chunk in self.chunks:
            self.buffer += chunk
            while "\n\n" in self.buffer:
                block, self.buffer = self.buffer.split("\n\n", 1)
                yield from parse_sse(block + "\n\n")


def test_stream_shows_every_step_in_order_and_the_result(stack) -> None:
    task_id = stack.submit(query="stream me")
    response = stack.client.simulate_get(f"/agent/stream/{task_id}")  # returns once the stream ends
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = parse_sse(response.text)
    assert [f["id"] for f in frames] == sorted({f["id"] for f in frames})
    assert [f["data"]["step"] for f in frames if f["event"] == "progress"] == AGENT_STEPS
    assert frames[0]["event"] == "state"
    assert frames[0]["data"]["state"] == "PENDING"
    last = frames[-1]
    assert last["event"] == "state"
    assert last["data"]["state"] == "SUCCESS"
    assert last["data"]["data"]["result"]["result"].startswith("fake-llm answer")

    # Reconnecting after the terminal event: nothing more, and the stream ends at once.
    again = stack.client.simulate_get(f"/agent/stream/{task_id}", headers={"Last-Event-ID": str(last["id"])})
    assert parse_sse(again.text) == []
    middle = frames[2]["id"]
    rest = parse_sse(stack.client.simulate_get(f"/agent/stream/{task_id}", headers={"Last-Event-ID": str(middle)}).text)
    assert rest == frames[3:]
    assert stack.client.simulate_get("/agent/stream/no-such-task").status_code == 404


def test_result_wait(settings, fake_llm, make_stack) -> None:
    """``GET /agent/result/{id}?wait=N``: the answer comes when the task ends, or after N seconds (202)."""
    stack = make_stack(settings.replace(llm_timeout=60.0))
    quick = stack.submit(query="quick result")
    done = stack.client.simulate_get(f"/agent/result/{quick}", params={"wait": "20"})
    assert done.status_code == 200, done.text
    assert done.json["status"] == "complete"
    assert done.json["result"]["result"].startswith("fake-llm answer")

    fake_llm.hang_next(1, seconds=20, match="Analyze this query: slow result")
    slow = stack.submit(query="slow result")
    waited = stack.client.simulate_get(f"/agent/result/{slow}", params={"wait": "0.5"})
    assert waited.status_code == 202
    assert waited.json["status"] == "not_ready"
    for bad in ("0", "-1", "31", "soon"):
        refused = stack.client.simulate_get(f"/agent/result/{slow}", params={"wait": bad})
        assert refused.status_code == 400, (bad, refused.text)
        assert refused.json["title"] == "Invalid wait"
    stack.client.simulate_post(f"/agent/cancel/{slow}")


def test_execute_wait(settings, fake_llm, make_stack) -> None:
    stack = make_stack(settings.replace(llm_timeout=60.0))
    done = stack.client.simulate_post("/agent/execute", params={"wait": "20"}, json={"query": "quick"})
    assert done.status_code == 200, done.text
    assert done.json["state"] == "SUCCESS"
    assert done.json["result"]["result"].startswith("fake-llm answer")

    # The slow task cannot finish before its first LLM call answers, 20 s after it starts: a 202
    # shows that ?wait=0.5 stopped waiting (the longest ?wait=30 would have seen it finish).
    fake_llm.hang_next(1, seconds=20, match="Analyze this query: slow")
    slow = stack.client.simulate_post("/agent/execute", params={"wait": "0.5"}, json={"query": "slow"})
    assert slow.status_code == 202
    assert slow.json["status"] == "queued"
    assert get_task(stack.runtime.sessions, slow.json["task_id"]).state in {"PENDING", "PROCESSING"}
    for bad in ("0", "-1", "31", "soon", "nan"):
        refused = stack.client.simulate_post("/agent/execute", params={"wait": bad}, json={"query": "x"})
        assert refused.status_code == 400, (bad, refused.text)
        assert refused.json["title"] == "Invalid wait"
    # Cancelling interrupts the hung call, so the worker stops at once at teardown.
    assert stack.client.simulate_post(f"/agent/cancel/{slow.json['task_id']}").status_code == 202
    wait_for_state(stack.runtime.sessions, slow.json["task_id"], "CANCELLED")


@contextmanager
def api_process(settings, tmp_path, *, threads: int) -> Iterator[str]:
    port = free_port()
    env = base_env({**settings.to_env(), "INTERLOCK_API_THREADS": str(threads)})
    with Proc(["api", "--bind", f"127.0.0.1:{port}", "--workers", "1"], env=env, log=tmp_path / "api.log") as proc:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz", proc=proc)
        yield base


def test_reconnect_with_last_event_id_misses_nothing_and_repeats_nothing(
    settings, fake_llm, tmp_path, make_stack
) -> None:
    fake_llm.latency = 0.4
    stack = make_stack(settings)
    with api_process(settings, tmp_path, threads=8) as base:
        task_id = requests.post(f"{base}/agent/execute", json={"query": "reconnect"}, timeout=10).json()["task_id"]
        seen: list[dict[str, Any]] = []
        with requests.get(f"{base}/agent/stream/{task_id}", stream=True, timeout=30) as first:
            for frame in SseReader(first):
                seen.append(frame)
                if frame["event"] == "progress" and frame["data"]["step"] == "reasoning":
                    break  # the client drops mid-task
        assert seen[-1]["data"]["state"] == "PROCESSING"
        headers = {"Last-Event-ID": str(seen[-1]["id"])}
        with requests.get(f"{base}/agent/stream/{task_id}", headers=headers, stream=True, timeout=30) as second:
            seen.extend(SseReader(second))
        ids = [f["id"] for f in seen]
        assert len(ids) == len(set(ids))
        assert ids == sorted(ids)
        with stack.runtime.sessions() as session:
            from models.task_queries import task_events

            assert ids == [e.id for e in task_events(session, task_id)]
        assert [f["data"]["step"] for f in seen if f["event"] == "progress"] == AGENT_STEPS
        assert seen[-1]["data"]["state"] == "SUCCESS"
        assert "result" in seen[-1]["data"]["data"]


def test_200_streams_on_one_api_process_while_100_submissions_succeed(settings, tmp_path, make_stack) -> None:
    stack = make_stack(settings, worker=False)  # no worker: the streamed tasks wait
    with api_process(settings, tmp_path, threads=256) as base:
        task_ids = [stack.submit(query=f"waiting {n}") for n in range(20)]
        opened = threading.Semaphore(0)
        results: list[list[dict[str, Any]] | BaseException] = []
        lock = threading.Lock()

        def follow(task_id: str) -> None:
            frames: list[dict[str, Any]] = []
            try:
                with requests.get(f"{base}/agent/stream/{task_id}", stream=True, timeout=60) as response:
                    response.raise_for_status()
                    for frame in SseReader(response):
                        frames.append(frame)
                        if len(frames) == 1:
                            opened.release()
                outcome: list[dict[str, Any]] | BaseException = frames
            except BaseException as exc:  # reported by the assertions below
                opened.release()
                outcome = exc
            with lock:
                results.append(outcome)

        threads = [threading.Thread(target=follow, args=(task_ids[n % 20],), daemon=True) for n in range(200)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        for _ in threads:
            assert opened.acquire(timeout=max(0.1, deadline - time.monotonic())), "a stream never opened"
        assert not results, results[:3]  # all 200 are open and waiting

        def submit(n: int) -> int:
            return requests.post(f"{base}/agent/execute", json={"query": f"more {n}"}, timeout=30).status_code

        codes: list[int] = []
        submitters = [threading.Thread(target=lambda n=n: codes.append(submit(n)), daemon=True) for n in range(100)]
        for submitter in submitters:
            submitter.start()
        for submitter in submitters:
            submitter.join(timeout=30)
        assert codes == [202] * 100
        assert not results  # the streams are still open

        for task_id in task_ids:  # ending the tasks ends their streams
            assert requests.post(f"{base}/agent/cancel/{task_id}", timeout=10).status_code == 202
        for thread in threads:
            thread.join(timeout=30)
        wait_until(lambda: len(results) == 200, timeout=5, what="every stream to end")
        for outcome in results:
            assert isinstance(outcome, list), outcome
            assert [f["data"]["state"] for f in outcome] == ["PENDING", "CANCELLED"]
