"""The LLM and tool calls of a task attempt, as rows of ``task_calls`` (``models.task_calls``).

A call's row is written when it begins, so the task's page shows it in flight, and completed when
it ends: answered (with the tokens the provider counted), failed or abandoned (a time limit, a
cancellation), with its duration. The dashboard draws them in the task's waterfall and adds up
their tokens and cost; ``TaskContext.complete`` and ``TaskContext.tool_call`` write them.

Both writes go through the process's group commit (:data:`models.call_batches.CALL_STARTS` and
``CALL_ENDS``): the calls of all worker threads that begin or end together are one statement.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from actors.errors import describe_error
from actors.runtime import Runtime
from interlock import tracing
from models.base import utcnow
from models.call_batches import CALL_ENDS, CALL_STARTS
from models.task_batches import write
from models.task_calls import LLM
from models.tenants import month_of

__all__ = ["CallLog", "OpenCall", "CALL_ERROR_CHARS"]

logger = logging.getLogger(__name__)

#: How much of a failed call's error its row keeps.
CALL_ERROR_CHARS = 500


@dataclass(frozen=True)
class OpenCall:
    """A call under way: end it with :meth:`ended` or :meth:`failed`."""

    runtime: Runtime
    call_id: int
    started: float  # time.monotonic()
    span: tracing.Span = tracing.NULL_SPAN

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def ended(self, *, prompt_tokens: int = 0, completion_tokens: int = 0, tenant: str = "", tokens: int = 0) -> None:
        """It answered: its duration and tokens; ``tokens`` are counted against ``tenant``'s budget with it."""
        self._record(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, tenant=tenant, tokens=tokens)
        self.span.set({"gen_ai.usage.input_tokens": prompt_tokens, "gen_ai.usage.output_tokens": completion_tokens})
        self.span.end()

    def failed(self, exc: BaseException) -> None:
        """It failed or was abandoned. The call's own error is what the caller raises: a database
        error while recording it is logged, not raised in its place."""
        self.span.fail(exc)
        self.span.end()
        try:
            self._record(error=describe_error(exc, limit=CALL_ERROR_CHARS))
        except SQLAlchemyError as record_error:
            logger.warning("the end of call %d was not recorded: %s", self.call_id, record_error)

    def _record(
        self,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        error: str | None = None,
        tenant: str = "",
        tokens: int = 0,
    ) -> None:
        ending = {
            "id": self.call_id,
            "duration_ms": max(0, self.elapsed_ms()),
            "prompt_tokens": max(0, prompt_tokens),
            "completion_tokens": max(0, completion_tokens),
            "error": error,
            "tenant": tenant,
            "month": month_of(),
            "tokens": max(0, tokens) if tenant else 0,
        }
        write(self.runtime.sessions, CALL_ENDS, ending)


@dataclass(frozen=True)
class CallLog:
    """Where one task attempt records its calls."""

    runtime: Runtime
    task_id: str
    attempt: int
    #: The durable step running now (``None`` outside steps).
    step: Callable[[], str | None]

    def begin(self, kind: str, name: str) -> OpenCall:
        """A call of ``kind`` (``llm``, ``tool``) to ``name`` (the model, the tool) starts now."""
        started_at, started, started_ns = utcnow(), time.monotonic(), time.time_ns()
        step = self.step()
        beginning = {
            "task_id": self.task_id,
            "attempt": self.attempt,
            "step": step,
            "kind": kind,
            "name": name[:128],
            "started_at": started_at,
        }
        call_id = write(self.runtime.sessions, CALL_STARTS, beginning)
        return OpenCall(self.runtime, call_id, started, _call_span(kind, name, step, started_ns))


def _call_span(kind: str, name: str, step: str | None, start_ns: int) -> tracing.Span:
    """A call's span, with the GenAI semantic conventions' attributes (tokens are added at its end)."""
    if not tracing.enabled():
        return tracing.NULL_SPAN
    attributes: dict[str, tracing.Value | None] = {"interlock.step": step}
    if kind == LLM:
        operation = "chat"
        attributes.update({"gen_ai.system": "openai", "gen_ai.request.model": name})
    else:
        operation = "execute_tool"
        attributes["gen_ai.tool.name"] = name
    attributes["gen_ai.operation.name"] = operation
    return tracing.start(f"{operation} {name}", attributes, start_ns=start_ns, kind="client")
