"""The LLM and tool calls of tasks (:mod:`actors.call_log`), written by the process's group commit.

A call's row is inserted when it begins (the task's page shows it in flight) and completed when it
ends; the calls of all worker threads that begin, or end, together are one statement
(:func:`models.task_batches.write`), and the tokens of the calls that end together are counted
against their tenants' budgets in that statement (one upsert per tenant, not one per call).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, insert, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from .group_commit import BatchKind
from .task_calls import TaskCall
from .tenants import add_usage

__all__ = ["CALL_STARTS", "CALL_ENDS"]

_CALLS = cast(Table, TaskCall.__table__)


CALL_START_MANY = text(
    """
WITH input AS (
    SELECT i.*, nextval(pg_get_serial_sequence('task_calls', 'id')) AS id
    FROM ROWS FROM (jsonb_to_recordset(CAST(:batch AS jsonb))
        AS (task_id text, attempt int, step text, kind text, name text, started_at timestamptz))
        WITH ORDINALITY AS i(task_id, attempt, step, kind, name, started_at, n)
), started AS (
    INSERT INTO task_calls (id, task_id, attempt, step, kind, name, started_at, prompt_tokens, completion_tokens)
    SELECT id, task_id, attempt, step, kind, name, started_at, 0, 0 FROM input ORDER BY n
)
SELECT id FROM input ORDER BY n
"""
)

CALL_END_MANY = text(
    """
WITH input AS (
    SELECT * FROM jsonb_to_recordset(CAST(:batch AS jsonb)) AS i(
        id bigint, duration_ms int, prompt_tokens int, completion_tokens int, error text,
        tenant text, month text, tokens bigint)
), ended AS (
    UPDATE task_calls c SET
        duration_ms = i.duration_ms, prompt_tokens = i.prompt_tokens, completion_tokens = i.completion_tokens,
        error = i.error
    FROM input i WHERE c.id = i.id
), counted AS (
    INSERT INTO tenant_usage AS u (tenant, month, tokens)
    SELECT tenant, month, sum(tokens) FROM input WHERE tokens > 0 GROUP BY tenant, month ORDER BY tenant, month
    ON CONFLICT (tenant, month) DO UPDATE SET tokens = u.tokens + excluded.tokens
)
SELECT count(*) FROM input
"""
)


def _call_start_many(connection: Connection, batch: Sequence[dict[str, Any]]) -> list[Any]:
    rows = [{**p, "started_at": p["started_at"].isoformat()} for p in batch]
    ids = connection.execute(CALL_START_MANY, {"batch": json.dumps(rows)}).scalars().all()
    if len(ids) != len(batch):
        raise RuntimeError(f"{len(ids)} calls recorded of {len(batch)}")
    return [int(call_id) for call_id in ids]


def _call_start_one(connection: Connection, params: dict[str, Any]) -> Any:
    values = {**params, "prompt_tokens": 0, "completion_tokens": 0}
    return int(connection.execute(insert(_CALLS).values(values).returning(_CALLS.c.id)).scalar_one())


def _call_end_many(connection: Connection, batch: Sequence[dict[str, Any]]) -> list[Any]:
    connection.execute(CALL_END_MANY, {"batch": json.dumps(list(batch))})
    return [None] * len(batch)


def _call_end_one(connection: Connection, params: dict[str, Any]) -> Any:
    values = {name: params[name] for name in ("duration_ms", "prompt_tokens", "completion_tokens", "error")}
    connection.execute(update(_CALLS).where(_CALLS.c.id == params["id"]).values(values))
    with Session(bind=connection) as session:
        add_usage(session, params["tenant"], params["tokens"], month=params["month"])


#: Calls that begin (rows shown in flight): ``{task_id, attempt, step, kind, name, started_at}`` each,
#: its row's id back. Inserted in task-id order (the order their tasks' rows are key-share locked);
#: two calls of one task that begin at once are two batches.
CALL_STARTS = BatchKind("call_start", many=_call_start_many, one=_call_start_one, key=lambda p: str(p["task_id"]))

#: How calls ended: ``{id, duration_ms, prompt_tokens, completion_tokens, error, tenant, month, tokens}``
#: each; ``tokens`` are counted against the tenant's budget of ``month``, once per batch and tenant
#: (the usage row every call of a tenant updates).
CALL_ENDS = BatchKind("call_end", many=_call_end_many, one=_call_end_one, key=lambda p: str(p["id"]))
