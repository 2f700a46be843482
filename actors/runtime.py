"""Per-process resources (database engine, I/O loop, LLM client), built after the process starts."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from actors.catalogue import WorkflowSpec
from actors.io_loop import IOLoop
from actors.limits import LLMLimits, SlidingWindow
from actors.llm import LLMClient, build_llm
from actors.running import RunningTasks, StartGate
from interlock.settings import Settings
from models.database import make_engine, make_sessionmaker
from models.group_commit import close_writer

__all__ = ["Runtime"]


@dataclass
class Runtime:
    """What actors need at run time, passed in rather than imported as globals."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
    _llm: LLMClient | None = None
    catalogue: dict[str, WorkflowSpec] = field(default_factory=dict)
    _llm_limits: LLMLimits | None = None
    _io: IOLoop | None = None
    #: The tasks this process runs right now (the heartbeat renews their leases only).
    running: RunningTasks = field(default_factory=RunningTasks)
    #: Bounds the tasks running at once when the process holds more (``INTERLOCK_AGENT_SLOTS``).
    start_gate: StartGate | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def open(cls, settings: Settings) -> Runtime:
        engine = make_engine(
            settings.effective_database_url,
            pool_size=settings.database_pool_size,
            group_commit_on=settings.group_commit,
        )
        return cls(settings=settings, engine=engine, sessions=make_sessionmaker(engine))

    @property
    def io(self) -> IOLoop:
        """The process's loop for outbound calls (LLM on it, tools in its helper threads)."""
        with self._lock:  # worker threads ask at once on the first tasks
            if self._io is None:
                s = self.settings  # a helper thread per tool call in flight: up to a slot each
                self._io = IOLoop(helper_threads=max(8, 2 * s.worker_threads, s.agent_slots))
            return self._io

    @property
    def llm(self) -> LLMClient:
        if self._llm is None:
            io = self.io
            with self._lock:
                if self._llm is None:
                    s = self.settings
                    self._llm = build_llm(
                        api_key=s.openai_api_key,
                        base_url=s.openai_base_url,
                        model=s.model,
                        timeout=s.llm_timeout,
                        io=io,
                    )
        return self._llm

    @property
    def window(self) -> SlidingWindow:
        return SlidingWindow(self.sessions)

    @property
    def llm_limits(self) -> LLMLimits | None:
        """Per-model request/token limits, or ``None`` when none are configured."""
        s = self.settings
        if not s.llm_rpm and not s.llm_tpm:
            return None
        if self._llm_limits is None:
            self._llm_limits = LLMLimits(self.window, rpm=dict(s.llm_rpm), tpm=dict(s.llm_tpm))
        return self._llm_limits

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
        if self._io is not None:
            self._io.close()
        close_writer(self.engine)  # writes what is pending first
        self.engine.dispose()
