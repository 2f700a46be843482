"""The batch tools' arguments: ``batch_api_calls`` and ``batch_url_scraping``.

They run as coordinator workflows (``actors.agents.batch_tools``) that fan a tool out over their
targets, one child task per target; they are declared here so that ``POST /tools/{name}`` and the
OpenAPI document know them with the other tools.
"""

from __future__ import annotations

from actors.tools.catalogue import URL_SCHEMA, Tool, batch_tool

__all__ = ["BATCH_API_CALLS", "BATCH_URL_SCRAPING", "MAX_TARGETS"]

#: Most targets one batch may fan out to.
MAX_TARGETS = 100

BATCH_API_CALLS: Tool = batch_tool(
    "batch_api_calls",
    schema={
        "type": "object",
        "title": "batch_api_calls",
        "properties": {"endpoints": {"type": "array", "items": URL_SCHEMA, "minItems": 1, "maxItems": MAX_TARGETS}},
        "required": ["endpoints"],
        "additionalProperties": False,
    },
)

BATCH_URL_SCRAPING: Tool = batch_tool(
    "batch_url_scraping",
    schema={
        "type": "object",
        "title": "batch_url_scraping",
        "properties": {
            "urls": {"type": "array", "items": URL_SCHEMA, "minItems": 1, "maxItems": MAX_TARGETS},
            "callback": {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "description": "Workflow given all results.",
            },
        },
        "required": ["urls"],
        "additionalProperties": False,
    },
)
