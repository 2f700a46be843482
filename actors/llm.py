"""The one place LLM calls go through: the ``openai`` client, or the offline stand-in.

Errors are translated at this boundary into :mod:`actors.errors`, so retry policy is decided by
what happened (429, 5xx, timeout, 4xx) and not by which SDK raised it.

A call is started with :meth:`LLMClient.start` and handed back as a future: ``openai.AsyncOpenAI``
runs it on the process's I/O loop (:mod:`actors.io_loop`), so the task's thread waits on a future
that a time limit or a cancellation can stop waiting on, and cancelling it closes the request.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import openai

from actors.errors import PermanentError, TransientError
from actors.io_loop import IOLoop

__all__ = ["Completion", "LLMClient", "OpenAIChat", "OfflineModel", "build_llm", "OFFLINE_MODEL_NAME"]

logger = logging.getLogger(__name__)

OFFLINE_MODEL_NAME = "interlock-offline-standin"


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    usage: dict[str, int] = field(default_factory=dict)


class LLMClient(Protocol):
    model: str

    def start(self, messages: list[dict[str, str]], *, timeout: float | None = None) -> Future[Completion]:
        """Begin one call; the future holds its :class:`Completion` or its translated error."""
        ...

    def complete(self, messages: list[dict[str, str]], *, timeout: float | None = None) -> Completion:
        """One call, waited for (outside a task, where nothing can interrupt the wait)."""
        ...

    def close(self) -> None: ...


class OpenAIChat:
    """Chat completions on any OpenAI-compatible endpoint; retries are the task's, not the SDK's.

    ``timeout`` bounds a whole call (the SDK's own timeout applies to each socket operation).
    Without ``io`` the client runs its own I/O loop, closed with it.

    Requests go through the SDK's aiohttp transport (``openai[aiohttp]``): with hundreds of calls
    in flight, httpx's own connection pool probes the socket of every idle connection on each
    request and response, which was a fifth of a worker's CPU; aiohttp's pool does not.
    """

    def __init__(
        self, *, api_key: str, base_url: str | None, model: str, timeout: float, io: IOLoop | None = None
    ) -> None:
        self.model = model
        self.timeout = timeout
        self._own_io = io is None
        self.io = io or IOLoop(helper_threads=1)
        self._client = openai.AsyncOpenAI(
            api_key=api_key or "unused",
            base_url=base_url or None,
            timeout=timeout,
            max_retries=0,
            http_client=openai.DefaultAioHttpClient(timeout=timeout),  # its session starts on the I/O loop
        )
        # Absolute: a path relative to the base URL is parsed three times per request by httpx.
        self._url = f"{self._client.base_url}chat/completions"

    def start(self, messages: list[dict[str, str]], *, timeout: float | None = None) -> Future[Completion]:
        return self.io.submit(self._complete(messages, timeout or self.timeout))

    def complete(self, messages: list[dict[str, str]], *, timeout: float | None = None) -> Completion:
        return self.start(messages, timeout=timeout).result()

    async def _complete(self, messages: list[dict[str, str]], timeout: float) -> Completion:
        try:
            # The client's own post: ``chat.completions.create`` would first walk the body through
            # the SDK's type-driven transform, a third of the CPU of a call, for plain dicts of text.
            # The answer comes back as parsed JSON (``object``): building the ``ChatCompletion`` model
            # from it cost a twentieth of a worker's CPU, for the three fields read below.
            response = await asyncio.wait_for(
                self._client.post(
                    self._url,
                    cast_to=object,
                    body={"model": self.model, "messages": messages},
                    options={"timeout": timeout},
                ),
                timeout,
            )
        except TimeoutError as exc:
            raise TransientError("LLM call timed out") from exc
        except openai.RateLimitError as exc:
            raise TransientError(f"LLM rate limited (429): {_message(exc)}", retry_after=_retry_after(exc)) from exc
        except openai.APITimeoutError as exc:
            if not isinstance(_root_cause(exc), TimeoutError):
                # The aiohttp transport reports a refused or dropped connection as a timeout too.
                raise TransientError(f"LLM endpoint unreachable: {_root_cause(exc).__class__.__name__}") from exc
            raise TransientError("LLM call timed out") from exc
        except openai.APIConnectionError as exc:
            raise TransientError(f"LLM endpoint unreachable: {exc.__class__.__name__}") from exc
        except openai.APIStatusError as exc:
            if exc.status_code >= 500 or exc.status_code in (408, 409):
                raise TransientError(
                    f"LLM server error ({exc.status_code}): {_message(exc)}", retry_after=_retry_after(exc)
                ) from exc
            raise PermanentError(f"LLM request refused ({exc.status_code}): {_message(exc)}") from exc
        return _completion(response, self.model)

    def close(self) -> None:
        try:
            self.io.submit(self._client.close()).result(timeout=10)
        finally:
            if self._own_io:
                self.io.close()


class OfflineModel:
    """A deterministic stand-in for development without an API key. It says what it is."""

    model = OFFLINE_MODEL_NAME

    def start(self, messages: list[dict[str, str]], *, timeout: float | None = None) -> Future[Completion]:
        future: Future[Completion] = Future()
        future.set_result(self.complete(messages, timeout=timeout))
        return future

    def complete(self, messages: list[dict[str, str]], *, timeout: float | None = None) -> Completion:
        prompt = messages[-1]["content"] if messages else ""
        digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
        text = (
            f"[offline stand-in model, not a real LLM; set OPENAI_API_KEY or OPENAI_BASE_URL] "
            f"answer {digest} to: {prompt[:200]}"
        )
        prompt_tokens = sum(len(m.get("content", "")) for m in messages) // 4 + 1
        completion_tokens = len(text) // 4 + 1
        return Completion(
            text=text,
            model=self.model,
            usage={
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        )

    def close(self) -> None:
        return None


def build_llm(*, api_key: str, base_url: str, model: str, timeout: float, io: IOLoop | None = None) -> LLMClient:
    if not api_key and not base_url:
        logger.warning("No OPENAI_API_KEY or OPENAI_BASE_URL: using the offline stand-in model")
        return OfflineModel()
    return OpenAIChat(api_key=api_key, base_url=base_url or None, model=model, timeout=timeout, io=io)


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after") if exc.response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _completion(answer: object, model: str) -> Completion:
    """The text, model and token counts of a chat completion's JSON (``ChatCompletion``'s fields)."""
    try:
        if not isinstance(answer, dict):
            raise TypeError("not a JSON object")
        message = answer["choices"][0]["message"]
        usage = answer.get("usage") or {}
        return Completion(
            text=message.get("content") or "",
            model=answer.get("model") or model,
            usage={name: int(usage.get(name) or 0) for name in ("prompt_tokens", "completion_tokens", "total_tokens")},
        )
    except (LookupError, AttributeError, TypeError, ValueError) as exc:
        raise TransientError(f"LLM answer is not a chat completion: {str(answer)[:300]}") from exc


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _message(exc: openai.APIStatusError) -> str:
    body: Any = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
    return exc.message[:300]
