"""JSON Schemas of request bodies: Falcon validates with them, and the API docs are built from them."""

from __future__ import annotations

from typing import Any

__all__ = ["EXECUTE_REQUEST"]

EXECUTE_REQUEST: dict[str, Any] = {
    "type": "object",
    "title": "AgentRequest",
    "properties": {
        "query": {
            "type": "string",
            "minLength": 1,
            "maxLength": 100_000,
            "pattern": r"\S",
            "description": "What the agent should do.",
        },
        "context": {"type": "object", "description": "Extra input for the workflow (free-form JSON)."},
        "workflow": {
            "type": "string",
            "minLength": 1,
            "maxLength": 64,
            "description": "Workflow to run; default `agent`.",
        },
        "priority": {
            "oneOf": [
                {"type": "string", "enum": ["low", "normal", "high"]},
                {"type": "integer", "minimum": 0, "maximum": 255},
            ],
            "description": "`low`, `normal` (default), `high`, or a RabbitMQ priority number.",
        },
    },
    "required": ["query"],
    "additionalProperties": False,
}
