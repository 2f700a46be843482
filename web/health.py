"""Liveness and readiness: is the process up; can it reach the database, the broker, the schema head."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import falcon
from sqlalchemy import Engine, text

__all__ = ["HealthResource", "ReadyResource", "schema_is_current"]


def schema_is_current(engine: Engine) -> tuple[bool, str]:
    """Compare the database's Alembic revision with the newest migration shipped with the code."""
    from pathlib import Path

    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    root = Path(__file__).resolve().parent.parent
    script = ScriptDirectory.from_config(Config(str(root / "alembic.ini")))
    heads = set(script.get_heads())
    with engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    if current == heads:
        return True, ",".join(sorted(current))
    return False, f"database at {sorted(current) or 'no revision'}, code expects {sorted(heads)}"


class HealthResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


class ReadyResource:
    def __init__(self, engine: Engine, broker_check: Callable[[], None]) -> None:
        self.engine = engine
        self.broker_check = broker_check

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        checks: dict[str, Any] = {}
        ready = True
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            checks["database"] = "ok"
            current, detail = schema_is_current(self.engine)
            checks["schema"] = "ok" if current else f"behind: {detail}"
            ready = ready and current
        except Exception as exc:  # noqa: BLE001 - a probe reports failures, it does not raise them
            checks["database"] = f"unreachable: {type(exc).__name__}"
            ready = False
        try:
            self.broker_check()
            checks["broker"] = "ok"
        except Exception as exc:  # noqa: BLE001 - same: report, do not raise
            checks["broker"] = f"unreachable: {type(exc).__name__}"
            ready = False
        resp.status = falcon.HTTP_200 if ready else falcon.HTTP_503
        resp.media = {"status": "ready" if ready else "not ready", "checks": checks}
