"""Logging set-up for the entry points: text or JSON lines, each stamped with its task id."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

__all__ = ["configure_logging", "task_id_var"]

#: The task the current thread is working on; set by the worker middleware.
task_id_var: ContextVar[str | None] = ContextVar("interlock_task_id", default=None)


class _TaskIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # A task id handed in with ``extra=`` wins over the thread's.
        record.task_id = getattr(record, "task_id", None) or task_id_var.get() or "-"
        return True


#: What every log record has; anything else was handed in with ``extra=`` and becomes a field.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; attributes given with ``extra=`` are fields of their own."""

    def format(self, record: logging.LogRecord) -> str:
        body = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
        }
        task_id = getattr(record, "task_id", "-")
        if task_id != "-":
            body["task_id"] = task_id
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRIBUTES and name not in body and name != "task_id":
                body[name] = value
        if record.exc_info:
            body["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once, at an entry point."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_TaskIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s [%(process)d %(task_id)s] %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("urllib3", "httpx", "httpx2", "httpcore", "httpcore2", "openai._base_client"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pika logs six ERROR lines and a traceback for every failed connection attempt (a RabbitMQ
    # restart under load printed 2,400 of them): the failure reaches its caller as an exception,
    # and Dramatiq's consumers and our publishers each log it once, so pika's own lines are noise.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
