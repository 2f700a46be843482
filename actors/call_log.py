"""The LLM and tool calls of a task attempt, as rows of ``task_calls`` (``models.task_calls``).

A call's row is written when it begins, so the task's page shows it in flight, and completed when
it ends: answered (with the tokens the provider counted), failed or abandoned (a time limit, a
cancellation), with its duration. The dashboard draws them in the task's waterfall and adds up
their tokens and cost; ``TaskContext.complete`` and ``TaskContext.tool_call`` write them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from actors.errors import describe_error
from actors.runtime import Runtime
from interlock import tracing
from models.base import utcnow
from models.database import one_statement_session
from models.task_calls import LLM, finish_call, start_call

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

    def ended(self, session: Session, *, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        """It answered: its duration and tokens, in the caller's session."""
        finish_call(
            session,
            self.call_id,
            duration_ms=self.elapsed_ms(),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )
        self.span.set({"gen_ai.usage.input_tokens": prompt_tokens, "gen_ai.usage.output_tokens": completion_tokens})
        self.span.end()

    def failed(self, exc: BaseException) -> None:
        """It failed or was abandoned. The call's own error is what the caller raises: a database
        error while recording it is logged, not raised in its place."""
        self.span.fail(exc)
        self.span.end()
        try:
            with one_statement_session(self.runtime.sessions) as session:
                finish_call(
                    session,
                    self.call_id,
                    duration_ms=self.elapsed_ms(),
                    error=describe_error(exc, limit=CALL_ERROR_CHARS),
                )
        except SQLAlchemyError as record_error:
            logger.warning("the end of call %d was not recorded: %s", self.call_id, record_error)


@dataclass(frozen=True)
class CallLog:
    """Where one task attempt records its calls."""

    runtime: Runtime
    task_id: str
    attempt: int
    #: The durable step running now (``None`` outside steps).
    step: Callable[[], str | None]

    def begin(self, kind: str, name: str, session: Session | None = None) -> OpenCall:
        """A call of ``kind`` (``llm``, ``tool``) to ``name`` (the model, the tool) starts now.

        In ``session`` when the caller has one open (one connection for its checks and this row).
        """
        if session is None:
            with one_statement_session(self.runtime.sessions) as own:
                return self.begin(kind, name, own)
        started_at, started, started_ns = utcnow(), time.monotonic(), time.time_ns()
        step = self.step()
        call_id = start_call(
            session,
            task_id=self.task_id,
            attempt=self.attempt,
            step=step,
            kind=kind,
            name=name,
            started_at=started_at,
        )
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
