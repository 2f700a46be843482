"""JSON Schemas of request bodies: Falcon validates with them, and the API docs are built from them."""

from __future__ import annotations

from typing import Any

__all__ = ["EXECUTE_REQUEST", "EVENT_REQUEST", "KEY_REQUEST"]

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

EVENT_REQUEST: dict[str, Any] = {
    "type": "object",
    "title": "EventRequest",
    "properties": {
        "event_type": {
            "type": "string",
            "maxLength": 128,
            "pattern": r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
            "description": "Dot-separated words, e.g. `new_data_arrived` or `user.profile_changed`.",
        },
        "data": {"type": "object", "description": "The event's payload (free-form JSON object)."},
    },
    "required": ["event_type"],
    "additionalProperties": False,
}

KEY_REQUEST: dict[str, Any] = {
    "type": "object",
    "title": "KeyRequest",
    "properties": {
        "scopes": {
            "type": "array",
            "items": {"type": "string", "enum": ["submit", "read", "admin", "metrics"]},
            "minItems": 1,
            "uniqueItems": True,
            "description": "What the key may do; `admin` includes every other scope.",
        },
        "tenant": {
            "type": "string",
            "minLength": 1,
            "maxLength": 64,
            "pattern": "^[A-Za-z0-9_.-]+$",
            "description": "The key's tenant; only your own (default).",
        },
    },
    "required": ["scopes"],
    "additionalProperties": False,
}
