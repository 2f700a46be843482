"""Group commit: the hot-path writes of all threads of a process, made many at a time.

Every claim, progress report and finish used to be one round trip and one commit made by one
worker thread for one task. Here the threads hand their write to the process's writer (one per
engine, a thread started on first use) and wait for it; whenever the writer is free it turns
*whatever is pending* into one statement per kind (``UPDATE ... FROM jsonb_to_recordset(...)``
whose CTEs also insert the events, see :mod:`models.task_statements`), each committed as it runs,
and wakes each caller with its own row. There is no fixed delay: a lone write is made at once, and batches form by
themselves while the writer is busy.

Durability is unchanged: a caller returns only after the statement holding its write committed
(``synchronous_commit`` untouched). Each kind's statement locks its rows in task-id order, so two
batches (of two processes) cannot deadlock each other; kinds are separate statements, so a claim
batch and a finish batch never hold locks at once. If a batch fails, its operations are run again
one by one, so each caller gets its own outcome and one bad operation fails no one else.

Why one statement rather than psycopg's pipeline mode (N statements sent at once, one commit):
measured on 20 finishes the two cost the same CPU; on 100 the pipeline took about 1.8x the CPU
and 1.3x the time (N plans and executions server-side), and one failing statement aborts the whole
pipeline's transaction.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine

from interlock.errors import InterlockError

__all__ = [
    "BatchKind",
    "GroupCommit",
    "WriterClosed",
    "enable",
    "writer_for",
    "close_writer",
    "observe_batches",
]

logger = logging.getLogger(__name__)

#: Operations of one kind written by one statement at most (bounds a statement's size and lock count).
MAX_BATCH = 256
#: Seconds without work after which the writer hands its connection back to the pool.
IDLE_SECONDS = 1.0


class WriterClosed(InterlockError, RuntimeError):
    """The process's writer was closed (the process is shutting down)."""


@dataclass(frozen=True)
class BatchKind:
    """One kind of write the writer batches, and how to make many, or one, of it.

    ``many(connection, params)`` makes all of them in one statement on an autocommit connection
    and returns each one's result, in order; ``one(connection, params)`` makes a single one (the
    fallback after a failed batch). ``key`` names the row an operation changes (the lock order);
    two operations on one row never share a batch unless ``merge`` picks the one to write for
    them (then all of them get its result).
    """

    name: str
    many: Callable[[Connection, Sequence[dict[str, Any]]], list[Any]]
    one: Callable[[Connection, dict[str, Any]], Any]
    key: Callable[[dict[str, Any]], str]
    merge: Callable[[Sequence[dict[str, Any]]], dict[str, Any]] | None = None


class _Operation:
    """One caller's write; the caller waits on ``done`` (a bare lock: the cheapest wake-up there is)."""

    __slots__ = ("kind", "params", "result", "error", "done")

    def __init__(self, kind: BatchKind, params: dict[str, Any]) -> None:
        self.kind = kind
        self.params = params
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Lock()
        self.done.acquire()

    def succeeded(self, result: Any) -> None:
        self.result = result
        self.done.release()

    def failed(self, error: BaseException) -> None:
        self.error = error
        self.done.release()

    def wait(self) -> Any:
        self.done.acquire()
        if self.error is not None:
            raise self.error
        return self.result


#: Called with (kind, batch size) after each batch; the worker's metrics set it.
_observers: list[Callable[[str, int], None]] = []


def observe_batches(observer: Callable[[str, int], None]) -> None:
    """Have ``observer(kind, size)`` called after every batch of every writer of this process."""
    if observer not in _observers:
        _observers.append(observer)


class GroupCommit:
    """The writer of one engine: callers :meth:`run` operations; one thread writes them in batches."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: Batch sizes seen, by kind: {kind: Counter({size: batches})}.
        self.batch_sizes: dict[str, Counter[int]] = {}
        self._pending: list[_Operation] = []
        #: Guards ``_pending``, ``_closed`` and ``_thread`` (held for a few instructions at a time).
        self._mutex = threading.Lock()
        #: Released when there may be work: the writer sleeps on it when it found none. A bare lock
        #: used as a binary semaphore; a Condition cost each caller a notify and each batch a wait,
        #: both written in Python, with a lock allocated per wait.
        self._wake = threading.Lock()
        self._wake.acquire()
        self._thread: threading.Thread | None = None
        self._closed = False
        #: The writer thread's connection, kept between batches while it is busy.
        self._connection: Connection | None = None

    def run(self, kind: BatchKind, params: dict[str, Any]) -> Any:
        """Make the write and return its result once it is committed; its error if it failed."""
        operation = _Operation(kind, params)
        with self._mutex:
            if self._closed:
                raise WriterClosed("the database writer of this process is closed")
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="interlock-group-commit", daemon=True)
                self._thread.start()
            self._pending.append(operation)
        self._signal()
        return operation.wait()

    def close(self) -> None:
        """Write what is pending, then stop the thread; later :meth:`run` calls fail."""
        with self._mutex:
            self._closed = True
            thread = self._thread
        self._signal()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def pending(self) -> int:
        """Operations waiting for the writer (not counting the batch it is writing)."""
        with self._mutex:
            return len(self._pending)

    def _signal(self) -> None:
        """Wake the writer if it sleeps; a no-op while it is busy (it looks again after each batch)."""
        if self._wake.locked():
            with contextlib.suppress(RuntimeError):  # another caller released it first: one wake-up serves both
                self._wake.release()

    def commits(self, kind: str) -> int:
        """Statements (each its own commit) made for ``kind`` so far."""
        return sum(self.batch_sizes.get(kind, Counter()).values())

    def _serve(self) -> None:
        try:
            while True:
                with self._mutex:
                    batch, self._pending = self._pending, []
                    closed = self._closed
                if not batch:
                    if closed:
                        return  # closed, and nothing left to write
                    # A caller appends before it signals, so work that came after the look above
                    # has released the lock by now (or will): no wake-up is lost.
                    if not self._wake.acquire(timeout=IDLE_SECONDS):
                        self._release_connection()  # idle: back to the pool (recycled there)
                    continue
                try:
                    self._write(batch)
                except BaseException as exc:
                    logger.exception("group commit failed unexpectedly")
                    for operation in batch:
                        if operation.done.locked():
                            operation.failed(exc)
        finally:
            self._release_connection()

    def _connect(self) -> Connection:
        if self._connection is None:
            self._connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self._connection

    def _release_connection(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()

    def _write(self, batch: list[_Operation]) -> None:
        by_kind: dict[str, list[_Operation]] = {}
        for operation in batch:
            by_kind.setdefault(operation.kind.name, []).append(operation)
        later: list[_Operation] = []
        for operations in by_kind.values():
            later.extend(self._write_kind(operations))
        if later:
            with self._mutex:
                self._pending[:0] = later  # first in the next batch (the writer looks again at once)

    def _write_kind(self, operations: list[_Operation]) -> list[_Operation]:
        """Write one kind's operations in one statement; returns those left for the next batch."""
        kind = operations[0].kind
        groups: dict[str, list[_Operation]] = {}
        later: list[_Operation] = []
        for operation in operations:
            group = groups.setdefault(kind.key(operation.params), [])
            if group and kind.merge is None:
                later.append(operation)  # the same row twice: the second waits for the first
            else:
                group.append(operation)
        keys = sorted(groups)  # rows are locked in this order too
        if len(keys) > MAX_BATCH:
            later.extend(op for key in keys[MAX_BATCH:] for op in groups[key])
            keys = keys[:MAX_BATCH]
        params = [self._merged(kind, groups[key]) for key in keys]
        if len(params) == 1:
            self._write_alone(kind, params[0], groups[keys[0]])
            return later
        try:
            results = kind.many(self._connect(), params)
        except Exception:  # noqa: BLE001 - each operation gets its own outcome below
            logger.warning("a batch of %d %s writes failed; writing them one by one", len(params), kind.name)
            self._release_connection()
            for index, key in enumerate(keys):
                self._write_alone(kind, params[index], groups[key])
            return later
        self._observed(kind.name, len(params))
        for index, key in enumerate(keys):
            for operation in groups[key]:
                operation.succeeded(results[index])
        return later

    def _write_alone(self, kind: BatchKind, params: dict[str, Any], operations: list[_Operation]) -> None:
        try:
            result = kind.one(self._connect(), params)
        except Exception as exc:  # noqa: BLE001 - handed to the caller, who raises it
            self._release_connection()  # it may be broken; the next write takes another
            for operation in operations:
                operation.failed(exc)
            return
        self._observed(kind.name, 1)
        for operation in operations:
            operation.succeeded(result)

    @staticmethod
    def _merged(kind: BatchKind, operations: list[_Operation]) -> dict[str, Any]:
        if len(operations) == 1 or kind.merge is None:
            return operations[0].params
        return kind.merge([operation.params for operation in operations])

    def _observed(self, kind: str, size: int) -> None:
        self.batch_sizes.setdefault(kind, Counter())[size] += 1
        for observer in _observers:
            observer(kind, size)


# -- one writer per engine ----------------------------------------------------------------------

_lock = threading.Lock()
#: Engines whose hot-path writes go through a writer, and that writer once it exists.
_writers: weakref.WeakKeyDictionary[Engine, GroupCommit | None] = weakref.WeakKeyDictionary()


def enable(engine: Engine) -> None:
    """Route ``engine``'s hot-path writes through a writer (made on first use)."""
    with _lock:
        _writers.setdefault(engine, None)


def writer_for(engine: Engine) -> GroupCommit | None:
    """The engine's writer, made now if need be; ``None`` when group commit is off for it."""
    try:
        writer = _writers[engine]
    except KeyError:
        return None
    if writer is None:
        with _lock:
            writer = _writers.get(engine)
            if writer is None and engine in _writers:
                writer = _writers[engine] = GroupCommit(engine)
    return writer


def close_writer(engine: Engine) -> None:
    """At shutdown: write what is pending and stop the engine's writer (a later use makes a new one)."""
    with _lock:
        writer = _writers.get(engine)
        if writer is not None:
            _writers[engine] = None
    if writer is not None:
        writer.close()


def _forget_writers() -> None:
    # A forked child has none of its parent's threads: it makes writers of its own.
    global _lock
    _lock = threading.Lock()
    for engine in list(_writers):
        _writers[engine] = None


os.register_at_fork(after_in_child=_forget_writers)
