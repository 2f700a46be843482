"""One asyncio event loop per process, in a thread of its own, for the outbound calls tasks make.

A worker thread hands it a coroutine (an LLM call on ``openai.AsyncOpenAI``) or a blocking call
(a tool's HTTP request or SQL query, run in one of its helper threads) and waits for the future it
gets back. Waiting on a future, unlike sitting in a socket read, can end early: at a time limit or
on cancellation the worker thread stops waiting at once, and a cancelled coroutine closes its
connection (see :mod:`actors.running`). Calls of every worker thread share the loop, which is
where the process's LLM connections live.

Started on first use, so after the worker process forked; closed with the runtime.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

__all__ = ["IOLoop"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")


class IOLoop:
    """An event loop thread and a pool of helper threads for blocking calls."""

    def __init__(self, *, helper_threads: int = 64) -> None:
        self.helper_threads = helper_threads
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._helpers: ThreadPoolExecutor | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop (started now if it is not yet)."""
        loop = self._loop
        if loop is not None:  # every call takes this path once started: no lock to contend for
            return loop
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                started = threading.Event()
                thread = threading.Thread(
                    target=self._serve, args=(loop, started), name="interlock-io-loop", daemon=True
                )
                thread.start()
                started.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        """Run ``coroutine`` on the loop; cancelling the returned future cancels the coroutine."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run_blocking(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run ``fn`` in a helper thread, in the caller's context (its running task, its log fields)."""
        with self._lock:
            if self._helpers is None:
                self._helpers = ThreadPoolExecutor(self.helper_threads, thread_name_prefix="interlock-io")
            helpers = self._helpers
        context = contextvars.copy_context()
        return helpers.submit(lambda: context.run(fn, *args, **kwargs))

    def close(self) -> None:
        """Stop the loop (cancelling what still runs on it) and let helper threads finish alone."""
        with self._lock:
            loop, thread, helpers = self._loop, self._thread, self._helpers
            self._loop = self._thread = self._helpers = None
        if helpers is not None:
            helpers.shutdown(wait=False, cancel_futures=True)
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(started.set)
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
