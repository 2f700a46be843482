"""The hot-path writes of many tasks at once, for the process's group-commit writer (:mod:`models.group_commit`).

Each kind says how one operation is written alone (the one-statement form of
:mod:`models.task_statements`) and how a batch of them is written in one statement (below), so
:mod:`models.task_lifecycle` only decides *which* write a task needs, and :func:`write` sends it
through the engine's writer when it has one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from . import group_commit
from .database import autocommit
from .group_commit import BatchKind
from .security import IDEMPOTENCY_WINDOW
from .task_statements import claim_in_one_statement, finish_in_one_statement, progress_in_one_statement
from .tasks import RUNNABLE_STATES, TERMINAL_STATES, TaskState

__all__ = ["CREATES", "CLAIMS", "PROGRESS_REPORTS", "FINISHES", "write"]


# -- PostgreSQL: many tasks' changes in one statement each (``models.group_commit``) --------------
#
# Each takes its operations as one JSON array of objects (``:batch``, read by ``jsonb_to_recordset``:
# one ``json.dumps`` in C, where arrays per column cost psycopg's dumpers in Python), locks the rows
# it may change in task-id order first (``FOR NO KEY UPDATE``, the order of every writer of several tasks:
# ``models.task_transitions.lock_in_order``, so no two of them can deadlock), makes the change
# and its events, and returns one row per task it changed, with the task's id. Rows are found by
# ``id = ANY(...)`` (the primary key's index, whatever the table's size). Written as SQL: the batch
# shape has no ORM equivalent worth building.

_RUNNABLE = ", ".join(f"'{state}'" for state in RUNNABLE_STATES)
_TERMINAL = ", ".join(f"'{state}'" for state in sorted(TERMINAL_STATES))
#: An idempotency key reserved longer ago than the window is replaced (as ``security.reserve_idempotency_key`` does).
_EXPIRED = f"k.created_at < excluded.created_at - interval '{int(IDEMPOTENCY_WINDOW.total_seconds())} seconds'"
_EVENT_INSERT = "INSERT INTO task_events (task_id, kind, state, progress, step, data, created_at)"

CREATE_MANY = text(
    f"""
WITH input AS (
    SELECT * FROM jsonb_to_recordset(CAST(:batch AS jsonb)) AS i(
        id text, workflow text, actor text, queue text, priority int, input jsonb, parent_id text,
        tenant text, now timestamptz, message jsonb, key text, body_hash text)
), allowed AS (
    SELECT i.* FROM input i
    WHERE i.parent_id IS NOT NULL
       OR NOT EXISTS (SELECT 1 FROM tenants c WHERE c.name = i.tenant AND c.monthly_tokens IS NOT NULL)
), reserved AS (
    INSERT INTO idempotency_keys AS k (tenant, key, body_hash, task_id, created_at)
    SELECT tenant, key, body_hash, id, now FROM allowed WHERE key IS NOT NULL
    ON CONFLICT (tenant, key) DO UPDATE SET
        body_hash = CASE WHEN {_EXPIRED} THEN excluded.body_hash ELSE k.body_hash END,
        task_id = CASE WHEN {_EXPIRED} THEN excluded.task_id ELSE k.task_id END,
        created_at = CASE WHEN {_EXPIRED} THEN excluded.created_at ELSE k.created_at END
    RETURNING k.tenant, k.key, k.task_id, k.body_hash
), accepted AS (
    SELECT a.* FROM allowed a
    WHERE a.key IS NULL OR EXISTS (SELECT 1 FROM reserved r WHERE r.task_id = a.id)
), created AS (
    INSERT INTO tasks (id, workflow, actor, queue, priority, state, progress, input, attempts, parent_id, tenant,
        wake_pending, created_at, updated_at)
    SELECT id, workflow, actor, queue, priority, '{TaskState.PENDING}', 0, input, 0, parent_id, tenant,
        false, now, now
    FROM accepted
    RETURNING id, created_at
), event AS (
    {_EVENT_INSERT}
    SELECT id, 'state', '{TaskState.PENDING}', 0, NULL, NULL, created_at FROM created
), parked AS (
    INSERT INTO scheduled_messages (task_id, queue, message, due_at, created_at)
    SELECT id, queue, message, now, now FROM accepted WHERE message IS NOT NULL
)
SELECT a.id, r.task_id AS holder, r.body_hash
FROM allowed a LEFT JOIN reserved r ON r.tenant = a.tenant AND r.key = a.key
"""  # noqa: S608 - only this module's constants are formatted in
)

CLAIM_MANY = text(
    f"""
WITH input AS (
    SELECT * FROM jsonb_to_recordset(CAST(:batch AS jsonb))
        AS i(id text, owner text, now timestamptz, expires timestamptz, max_deliveries int, admitted float8)
), locked AS (
    SELECT t.id FROM tasks t WHERE t.id = ANY(ARRAY(SELECT id FROM input)) ORDER BY t.id FOR NO KEY UPDATE
), claimed AS (
    UPDATE tasks t SET
        state = '{TaskState.PROCESSING}',
        attempts = t.attempts
            + CASE WHEN t.state = '{TaskState.PROCESSING}' AND t.lease_owner IS NULL THEN 0 ELSE 1 END,
        lease_owner = i.owner,
        lease_expires_at = i.expires,
        started_at = coalesce(t.started_at, i.now),
        updated_at = i.now,
        wake_pending = false
    FROM input i JOIN locked l ON l.id = i.id
    WHERE t.id = ANY(ARRAY(SELECT id FROM input)) AND t.id = i.id
      AND t.state IN ({_RUNNABLE})
      AND (t.lease_expires_at IS NULL OR t.lease_expires_at < i.now)
      AND NOT EXISTS (SELECT 1 FROM tenants c WHERE c.name = t.tenant AND c.max_concurrency IS NOT NULL)
    RETURNING t.id, t.attempts, t.progress, t.current_step, t.input, t.parent_id,
        i.owner, i.now, i.max_deliveries, i.admitted
), event AS (
    {_EVENT_INSERT}
    SELECT id, 'state', '{TaskState.PROCESSING}', progress, current_step,
        jsonb_strip_nulls(jsonb_build_object('attempt', attempts, 'worker', owner, 'rate_limit_admitted_at', admitted)),
        now
    FROM claimed WHERE attempts <= max_deliveries
)
SELECT id, attempts, progress, current_step, input, parent_id FROM claimed
"""  # noqa: S608 - only this module's constants are formatted in
)

FINISH_MANY = text(
    f"""
WITH input AS (
    SELECT * FROM jsonb_to_recordset(CAST(:batch AS jsonb))
        AS i(id text, owner text, state text, error text, result jsonb, data jsonb, now timestamptz)
), locked AS (
    SELECT t.id FROM tasks t WHERE t.id = ANY(ARRAY(SELECT id FROM input)) ORDER BY t.id FOR NO KEY UPDATE
), finished AS (
    UPDATE tasks t SET
        state = i.state,
        error = i.error,
        finished_at = i.now,
        updated_at = i.now,
        lease_owner = NULL,
        lease_expires_at = NULL,
        progress = CASE WHEN i.state = '{TaskState.SUCCESS}' THEN 100 ELSE t.progress END,
        current_step = CASE WHEN i.state = '{TaskState.SUCCESS}' THEN 'complete' ELSE t.current_step END,
        result = CASE WHEN i.state = '{TaskState.SUCCESS}' THEN i.result ELSE t.result END
    FROM input i JOIN locked l ON l.id = i.id
    WHERE t.id = ANY(ARRAY(SELECT id FROM input)) AND t.id = i.id
      AND t.state NOT IN ({_TERMINAL}) AND t.lease_owner = i.owner
    RETURNING t.id, t.progress, t.current_step, t.parent_id, i.state AS ended, i.data, i.now
), event AS (
    {_EVENT_INSERT}
    SELECT id, 'state', ended, progress, current_step, data, now FROM finished
)
SELECT id, progress, current_step, parent_id FROM finished
"""  # noqa: S608 - only this module's constants are formatted in
)

PROGRESS_MANY = text(
    f"""
WITH input AS (
    SELECT * FROM jsonb_to_recordset(CAST(:batch AS jsonb))
        AS i(id text, progress int, step text, data jsonb, now timestamptz)
), locked AS (
    SELECT t.id FROM tasks t WHERE t.id = ANY(ARRAY(SELECT id FROM input)) ORDER BY t.id FOR NO KEY UPDATE
), updated AS (
    UPDATE tasks t SET progress = i.progress, current_step = i.step, updated_at = i.now
    FROM input i JOIN locked l ON l.id = i.id
    WHERE t.id = ANY(ARRAY(SELECT id FROM input)) AND t.id = i.id
      AND (t.progress < i.progress OR (t.progress = i.progress AND t.current_step IS DISTINCT FROM i.step))
    RETURNING t.id, t.state, t.progress, t.current_step, t.updated_at, i.data
), recorded AS (
    {_EVENT_INSERT}
    SELECT id, 'progress', state, progress, current_step, data, updated_at FROM updated
)
SELECT t.id, t.state FROM tasks t WHERE t.id = ANY(ARRAY(SELECT id FROM input))
"""  # noqa: S608 - only this module's constants are formatted in
)


def write(sessions: sessionmaker[Session], kind: BatchKind, params: dict[str, Any]) -> Any:
    """One hot-path statement: through the engine's writer if it has one, else on its own."""
    writer = group_commit.writer_for(sessions.kw["bind"])
    if writer is not None:
        return writer.run(kind, params)
    with autocommit(sessions) as connection:
        return kind.one(connection, params)


def _create_many(connection: Connection, batch: Sequence[dict[str, Any]]) -> list[Any]:
    rows = [{**p, "now": p["now"].isoformat()} for p in batch]
    by_id = {row.id: row for row in connection.execute(CREATE_MANY, {"batch": json.dumps(rows)})}
    return [by_id.get(p["id"]) for p in batch]


def _create_one(connection: Connection, params: dict[str, Any]) -> Any:
    return _create_many(connection, [params])[0]


def _submission(params: dict[str, Any]) -> str:
    """Submissions with one idempotency key are one write: the first's, whose outcome all of them get."""
    if params["key"] is None:
        return f"task:{params['id']}"
    return f"key:{params['tenant']}:{params['key']}"


#: New tasks, each with its first event, its message in the outbox and its idempotency key; a row per
#: task whose tenant has no token budget (``id``; ``holder`` and ``body_hash``: the key's holder).
CREATES = BatchKind("create", many=_create_many, one=_create_one, key=_submission, merge=lambda ps: ps[0])


def _claim_one(connection: Connection, params: dict[str, Any]) -> Any:
    return connection.execute(claim_in_one_statement(), params).first()


def _claim_many(connection: Connection, batch: Sequence[dict[str, Any]]) -> list[Any]:
    rows = [
        {
            "id": p["p_id"],
            "owner": p["p_owner"],
            "now": p["p_now"].isoformat(),
            "expires": p["p_expires"].isoformat(),
            "max_deliveries": p["p_max"],
            "admitted": p["p_admitted"],
        }
        for p in batch
    ]
    by_id = {row.id: row for row in connection.execute(CLAIM_MANY, {"batch": json.dumps(rows)})}
    return [by_id.get(p["p_id"]) for p in batch]


CLAIMS = BatchKind("claim", many=_claim_many, one=_claim_one, key=lambda p: str(p["p_id"]))


def _progress_one(connection: Connection, params: dict[str, Any]) -> Any:
    return connection.execute(progress_in_one_statement(), params).scalar_one_or_none()


def _progress_many(connection: Connection, batch: Sequence[dict[str, Any]]) -> list[Any]:
    rows = [
        {
            "id": p["p_id"],
            "progress": p["p_progress"],
            "step": p["p_step"],
            "data": p["p_data"],
            "now": p["p_now"].isoformat(),
        }
        for p in batch
    ]
    states = {row.id: row.state for row in connection.execute(PROGRESS_MANY, {"batch": json.dumps(rows)})}
    return [states.get(p["p_id"]) for p in batch]


def _furthest(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Of one task's reports in a batch, the one written: the highest, the latest of equals."""
    return max(reversed(reports), key=lambda p: int(p["p_progress"]))


PROGRESS_REPORTS = BatchKind(
    "progress", many=_progress_many, one=_progress_one, key=lambda p: str(p["p_id"]), merge=_furthest
)


def _finish_one(connection: Connection, params: dict[str, Any]) -> Any:
    success = params["p_state"] == TaskState.SUCCESS
    return connection.execute(finish_in_one_statement(success=success), params).first()


def _finish_many(connection: Connection, batch: Sequence[dict[str, Any]]) -> list[Any]:
    rows = [
        {
            "id": p["p_id"],
            "owner": p["p_owner"],
            "state": str(p["p_state"]),
            "error": p["p_error"],
            "result": p.get("p_result"),
            "data": p["p_data"],
            "now": p["p_now"].isoformat(),
        }
        for p in batch
    ]
    by_id = {row.id: row for row in connection.execute(FINISH_MANY, {"batch": json.dumps(rows)})}
    return [by_id.get(p["p_id"]) for p in batch]


FINISHES = BatchKind("finish", many=_finish_many, one=_finish_one, key=lambda p: str(p["p_id"]))
