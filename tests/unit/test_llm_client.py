"""The LLM boundary maps what the server did onto transient or permanent errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from actors.errors import PermanentError, TransientError
from actors.llm import OFFLINE_MODEL_NAME, OfflineModel, OpenAIChat, _completion, build_llm

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def chat(fake_llm) -> Iterator[OpenAIChat]:
    client = OpenAIChat(api_key="sk-test", base_url=fake_llm.base_url, model="m", timeout=2.0)
    yield client
    client.close()


def test_completion_reports_text_model_and_usage(chat, fake_llm) -> None:
    completion = chat.complete(MESSAGES)
    assert completion.text == "fake-llm answer to: hello"
    assert completion.model == "m"
    assert completion.usage["total_tokens"] == completion.usage["prompt_tokens"] + completion.usage["completion_tokens"]
    assert fake_llm.count() == 1


def test_429_is_transient_with_retry_after(chat, fake_llm) -> None:
    fake_llm.fail_next(status=429, retry_after=7)
    with pytest.raises(TransientError) as raised:
        chat.complete(MESSAGES)
    assert raised.value.retry_after == 7.0
    assert fake_llm.count(status=429) == 1  # the SDK did not retry behind our back


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_transient(chat, fake_llm, status: int) -> None:
    fake_llm.fail_next(status=status)
    with pytest.raises(TransientError, match=str(status)):
        chat.complete(MESSAGES)


def test_timeout_is_transient(fake_llm) -> None:
    chat = OpenAIChat(api_key="sk-test", base_url=fake_llm.base_url, model="m", timeout=0.3)
    fake_llm.hang_next(seconds=5)
    try:
        with pytest.raises(TransientError, match="timed out"):
            chat.complete(MESSAGES)
    finally:
        chat.close()


def test_unreachable_endpoint_is_transient() -> None:
    chat = OpenAIChat(api_key="sk-test", base_url="http://127.0.0.1:1/v1", model="m", timeout=1)
    try:
        with pytest.raises(TransientError, match="unreachable"):
            chat.complete(MESSAGES)
    finally:
        chat.close()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_4xx_is_permanent(chat, fake_llm, status: int) -> None:
    fake_llm.fail_next(status=status)
    with pytest.raises(PermanentError, match=str(status)):
        chat.complete(MESSAGES)


def test_offline_model_is_deterministic_and_says_what_it_is() -> None:
    first = OfflineModel().complete(MESSAGES)
    assert first == OfflineModel().complete(MESSAGES)
    assert first.model == OFFLINE_MODEL_NAME
    assert "offline stand-in model, not a real LLM" in first.text
    assert isinstance(build_llm(api_key="", base_url="", model="x", timeout=1), OfflineModel)
    online = build_llm(api_key="", base_url="http://127.0.0.1:1/v1", model="x", timeout=1)
    assert isinstance(online, OpenAIChat)
    online.close()


@pytest.mark.parametrize("answer", [{"choices": []}, {"choices": [{}]}, "<html>a proxy's page</html>", None])
def test_an_answer_that_is_not_a_chat_completion_is_transient(answer: object) -> None:
    with pytest.raises(TransientError, match="not a chat completion"):
        _completion(answer, "m")
