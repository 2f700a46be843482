"""The reference article's FastAPI submission endpoint (served by uvicorn for W3)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from .celery_app import execute_agent_workflow

api = FastAPI()


class AgentRequest(BaseModel):
    query: str
    context: dict[str, Any] = {}


class TaskResponse(BaseModel):
    task_id: str
    status: str
    message: str


@api.post("/agent/execute", response_model=TaskResponse)
async def execute_agent(request: AgentRequest) -> TaskResponse:
    task = execute_agent_workflow.delay(query=request.query, context=request.context)
    return TaskResponse(
        task_id=task.id, status="queued", message=f"Task submitted. Check status at /agent/status/{task.id}"
    )


@api.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
