"""Per-process resources (database engine, LLM client), built after the process starts."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from interlock.settings import Settings
from models.database import make_engine, make_sessionmaker

from .llm import LLMClient, build_llm

__all__ = ["Runtime"]


@dataclass
class Runtime:
    """What actors need at run time, passed in rather than imported as globals."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
    _llm: LLMClient | None = None

    @classmethod
    def open(cls, settings: Settings) -> Runtime:
        engine = make_engine(settings.effective_database_url, pool_size=settings.worker_threads + 2)
        return cls(settings=settings, engine=engine, sessions=make_sessionmaker(engine))

    @property
    def llm(self) -> LLMClient:
        if self._llm is None:
            s = self.settings
            self._llm = build_llm(
                api_key=s.openai_api_key, base_url=s.openai_base_url, model=s.model, timeout=s.llm_timeout
            )
        return self._llm

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
        self.engine.dispose()
