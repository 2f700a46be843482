"""The fake provider must behave like the real one *as seen by the real openai client*."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from testkit.fakes.openai_server import FakeOpenAIServer

MakeClient = Callable[..., openai.OpenAI]


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


@pytest.fixture
def make_client(server: FakeOpenAIServer) -> Iterator[MakeClient]:
    clients: list[openai.OpenAI] = []

    def make(**kwargs: Any) -> openai.OpenAI:
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 10.0)
        client = openai.OpenAI(base_url=server.base_url, api_key="test", **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def ask(client: openai.OpenAI, text: str, model: str = "gpt-test") -> Any:
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])


def raw_request(server: FakeOpenAIServer, path: str, data: bytes | None = None) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{server.port}{path}",
        data=data,
        method="POST" if data is not None else "GET",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_normal_completion_has_content_and_usage(server: FakeOpenAIServer, make_client: MakeClient) -> None:
    messages: Any = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there"},
    ]
    resp = make_client().chat.completions.create(model="gpt-test", messages=messages)

    content = "fake-llm answer to: hello there"
    assert resp.id.startswith("chatcmpl-")
    assert resp.object == "chat.completion"
    assert resp.model == "gpt-test"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == content
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == len("be brief" + "hello there") // 4 + 1
    assert resp.usage.completion_tokens == len(content) // 4 + 1
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert ask(make_client(), "hello there").id != resp.id
    assert server.requests[0]["body"]["messages"] == messages
    assert server.requests[0]["status"] == 200


def test_content_is_truncated_to_200_chars_of_last_user_message(make_client: MakeClient) -> None:
    resp = ask(make_client(), "x" * 500)
    assert resp.choices[0].message.content == "fake-llm answer to: " + "x" * 200


def test_reply_hook_overrides_content(server: FakeOpenAIServer, make_client: MakeClient) -> None:
    server.reply = lambda body: f"custom for {body['model']}"
    assert ask(make_client(), "hi", model="m1").choices[0].message.content == "custom for m1"


def test_rate_limit_carries_retry_after(server: FakeOpenAIServer, make_client: MakeClient) -> None:
    server.fail_next(status=429, retry_after=1)
    with pytest.raises(openai.RateLimitError) as exc_info:
        ask(make_client(), "hi")
    assert exc_info.value.response.headers["retry-after"] == "1"
    assert exc_info.value.code == "rate_limit_exceeded"
    assert server.count(status=429) == 1
    assert ask(make_client(), "hi").choices[0].message.content  # fault was consumed


def test_fractional_retry_after_is_decimal(server: FakeOpenAIServer, make_client: MakeClient) -> None:
    server.fail_next(status=429, retry_after=0.5)
    with pytest.raises(openai.RateLimitError) as exc_info:
        ask(make_client(), "hi")
    assert exc_info.value.response.headers["retry-after"] == "0.5"


def test_server_error(server: FakeOpenAIServer, make_client: MakeClient) -> None:
    server.fail_next(status=500)
    with pytest.raises(openai.InternalServerError) as exc_info:
        ask(make_client(), "hi")
    assert "retry-after" not in exc_info.value.response.headers
    assert exc_info.value.response.json()["error"]["type"] == "server_error"


def test_faults_are_consumed_in_fifo_order(server: FakeOpenAIServer, make_client: MakeClient) -> None:
    server.fail_next(count=2, status=503)
    server.fail_next(status=400)
    client = make_client()
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            ask(client, "hi")
    with pytest.raises(openai.BadRequestError):
        ask(client, "hi")
    assert ask(client, "hi").choices[0].message.content
    assert [r["status"] for r in server.requests] == [503, 503, 400, 200]


def test_hang_triggers_client_timeout_and_stop_is_quick() -> None:
    hang = 30.0
    before = set(threading.enumerate())
    with FakeOpenAIServer() as srv:
        srv.hang_next(seconds=hang)
        client = openai.OpenAI(base_url=srv.base_url, api_key="test", max_retries=0, timeout=0.5)
        with pytest.raises(openai.APITimeoutError):
            ask(client, "hi")
        client.close()
        assert srv.count() == 1  # recorded as it will be answered
        hung_since = srv.requests[0]["time"]
    # stop() woke the handler thread out of its hang: it has ended, and before the hang would have.
    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=max(0.0, hung_since + hang - time.monotonic()))
        assert not thread.is_alive(), thread.name
    assert time.monotonic() < hung_since + hang


def test_hang_then_answers_normally(server: FakeOpenAIServer, make_client: MakeClient) -> None:
    server.hang_next(seconds=0.2)
    started = time.monotonic()
    assert ask(make_client(), "hi").choices[0].message.content == "fake-llm answer to: hi"
    assert time.monotonic() - started >= 0.2


def test_match_only_affects_matching_requests(server: FakeOpenAIServer, make_client: MakeClient) -> None:
    server.fail_next(status=500, match="poison")
    client = make_client()
    assert ask(client, "harmless").choices[0].message.content == "fake-llm answer to: harmless"
    with pytest.raises(openai.InternalServerError):
        ask(client, "this is poison")
    assert ask(client, "poison again").choices[0].message.content  # only one fault was scripted
    assert server.count("poison", status=500) == 1
    assert server.count("harmless") == 1


def test_count_and_reset(server: FakeOpenAIServer, make_client: MakeClient) -> None:
    client = make_client()
    server.fail_next(status=500, match="b")
    for text in ("a1", "a2", "b1"):
        with contextlib.suppress(openai.InternalServerError):
            ask(client, text)
    assert server.count() == 2
    assert server.count("a") == 2
    assert server.count("b") == 0
    assert server.count("b", status=500) == 1
    assert server.count(status=None) == 3
    server.fail_next(status=500)
    server.reset()
    assert server.count(status=None) == 0
    assert ask(client, "after reset").choices[0].message.content  # scripted fault was dropped


def test_real_client_retry_recovers_from_one_rate_limit(server: FakeOpenAIServer, make_client: MakeClient) -> None:
    server.fail_next(status=429, retry_after=0)
    resp = ask(make_client(max_retries=2), "retry me")
    assert resp.choices[0].message.content == "fake-llm answer to: retry me"
    assert server.count("retry me", status=429) == 1
    assert server.count("retry me", status=200) == 1


def test_latency_is_applied(server: FakeOpenAIServer, make_client: MakeClient) -> None:
    server.latency = 1.0
    with pytest.raises(openai.APITimeoutError):
        ask(make_client(timeout=0.2), "slow")


def test_models_list(make_client: MakeClient) -> None:
    models = make_client().models.list()
    assert [m.id for m in models.data] == ["fake-model"]


def test_malformed_json_and_unknown_path(server: FakeOpenAIServer) -> None:
    status, body = raw_request(server, "/v1/chat/completions", b"{not json")
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    status, body = raw_request(server, "/v1/nope")
    assert status == 404
    assert "message" in body["error"]
    status, _ = raw_request(server, "/v1/nope", b"{}")
    assert status == 404
    assert server.requests == []
