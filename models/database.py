"""Engines and sessions. Built by each process after it starts, never at import time."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from . import group_commit

__all__ = [
    "make_engine",
    "make_sessionmaker",
    "transaction",
    "autocommit",
    "autocommit_session",
    "one_statement_session",
    "writes_in_one_statement",
    "is_postgres",
    "is_transient",
    "retry_transient",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: PostgreSQL's SQLSTATEs for "deadlock detected" and "could not serialize access".
_TRANSACTION_LOST = frozenset({"40P01", "40001"})

#: Connections older than this are replaced at checkout (below common proxy and firewall idle cuts).
POOL_RECYCLE_SECONDS = 1800


def make_engine(url: str, *, pool_size: int = 10, group_commit_on: bool = True) -> Engine:
    """An engine tuned for many short transactions from worker threads.

    ``group_commit_on`` (PostgreSQL): the hot-path writes of all threads go through one writer that
    makes them in batches (:mod:`models.group_commit`).

    No ``pool_pre_ping``: it costs a round trip per transaction (a fifth of a worker's time in
    the benchmarks). A connection the server dropped fails once instead; SQLAlchemy then
    discards the whole stale pool, the worker's retry or the API's 503 covers that one failure,
    and connections are recycled before any idle timeout of a proxy is likely to cut them.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=POOL_RECYCLE_SECONDS)
    if group_commit_on:
        group_commit.enable(engine)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while a worker writes; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One short unit of work: commit on success, roll back on error."""
    with sessions.begin() as session:
        yield session


def is_postgres(session_or_engine: Session | Engine) -> bool:
    bind = session_or_engine.get_bind() if isinstance(session_or_engine, Session) else session_or_engine
    return bind.dialect.name == "postgresql"


@contextmanager
def autocommit(sessions: sessionmaker[Session]) -> Iterator[Connection]:
    """A pooled connection on which each statement commits by itself: no BEGIN or COMMIT round trip.

    For lookups, and for changes made in one statement (see :func:`writes_in_one_statement`).
    The pool restores the usual isolation when the connection is returned.
    """
    engine: Engine = sessions.kw["bind"]
    with engine.connect() as connection:
        yield connection.execution_options(isolation_level="AUTOCOMMIT")


@contextmanager
def autocommit_session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A session on an :func:`autocommit` connection: each query and the final flush commit alone."""
    with autocommit(sessions) as connection, sessions(bind=connection) as session:
        yield session
        session.commit()


@contextmanager
def one_statement_session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A session for work that is a single statement (or only reads).

    On PostgreSQL it runs in :func:`autocommit_session` (no BEGIN or COMMIT round trips); on
    SQLite it is an ordinary transaction.
    """
    if writes_in_one_statement(sessions):
        with autocommit_session(sessions) as session:
            yield session
    else:
        with sessions.begin() as session:
            yield session


def writes_in_one_statement(sessions: sessionmaker[Session]) -> bool:
    """Whether the database can make a task change and its event in one statement (PostgreSQL)."""
    engine: Engine = sessions.kw["bind"]
    return engine.dialect.name == "postgresql"


def is_transient(exc: BaseException) -> bool:
    """Whether running the same work again may succeed: the server went away or restarted, or a deadlock.

    Connection failures (SQLSTATE class 08, or no answer from the server at all), a server shutting
    down (57P, e.g. ``pg_ctl restart``) and a transaction chosen as a deadlock or serialization victim.
    """
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate is None:
        return isinstance(exc, OperationalError)
    return sqlstate in _TRANSACTION_LOST or sqlstate.startswith(("08", "57P"))


def retry_transient(work: Callable[[], T], *, within: float, what: str) -> T:
    """``work()``, run again after a transient database error (:func:`is_transient`) for up to ``within`` seconds.

    For the writes that end a task or hand it back, so that a database restart of a few seconds
    delays them instead of losing them. ``work`` must be safe to run twice: a commit may have
    succeeded just before the connection broke.
    """
    deadline = time.monotonic() + within
    attempt = 0
    while True:
        try:
            return work()
        except DBAPIError as exc:
            attempt += 1
            pause = min(2.0, 0.05 * 2**attempt) * random.uniform(1.0, 1.5)
            if not is_transient(exc) or time.monotonic() + pause > deadline:
                raise
            logger.warning("%s failed (%s); trying again in %.2fs", what, type(exc.orig).__name__, pause)
            time.sleep(pause)
