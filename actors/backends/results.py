"""Dramatiq's result backend on the database, so ``message.get_result()`` works without Redis."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from dramatiq.results import ResultBackend
from dramatiq.results.backend import Missing
from sqlalchemy.orm import Session, sessionmaker

from models.base import as_utc, utcnow
from models.results import ActorResult

__all__ = ["DatabaseResultBackend"]


class DatabaseResultBackend(ResultBackend):
    def __init__(self, sessions: sessionmaker[Session], *, namespace: str = "interlock-results") -> None:
        super().__init__(namespace=namespace)
        self.sessions = sessions

    def _get(self, message_key: str) -> Any:
        with self.sessions() as session:
            row = session.get(ActorResult, message_key)
            if row is None or (as_utc(row.expires_at) or utcnow()) < utcnow():
                return Missing
            return self.encoder.decode(json.dumps(row.value["data"]).encode())

    def _store(self, message_key: str, result: Any, ttl: int) -> None:
        value = {"data": json.loads(self.encoder.encode(result))}
        expires = utcnow() + timedelta(milliseconds=ttl)
        with self.sessions.begin() as session:
            session.merge(ActorResult(key=message_key, value=value, expires_at=expires))
