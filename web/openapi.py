"""The OpenAPI 3 document at ``/openapi.json``, built from the app's routes and the JSON Schemas
the routes validate with (``web.schemas``, ``actors.tools.catalogue.TOOL_SCHEMAS``), and ``/docs``.

Nothing is written twice: paths and methods come from Falcon's router, the scope each needs from
``web.auth.ROUTE_SCOPES``, request bodies from the schemas the responders validate against.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import falcon

from actors.tools.catalogue import TOOL_SCHEMAS

from .auth import ROUTE_SCOPES
from .schemas import EVENT_REQUEST, EXECUTE_REQUEST, KEY_REQUEST

__all__ = ["routes", "openapi_document", "OpenApiResource", "DocsResource"]

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

#: Request bodies by (route, method): the very schemas the responders validate with.
REQUEST_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("/agent/execute", "POST"): EXECUTE_REQUEST,
    ("/events", "POST"): EVENT_REQUEST,
    ("/keys", "POST"): KEY_REQUEST,
}

#: Event ids are 64-bit.
MAX_EVENT_ID = 2**63 - 1
#: Query parameters by (route, method): (name, schema, description).
QUERY: dict[tuple[str, str], list[tuple[str, dict[str, Any], str]]] = {
    ("/agent/execute", "POST"): [
        (
            "wait",
            {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 30},
            "Answer 200 with the finished task if it ends within this many seconds.",
        )
    ],
    ("/agent/result/{task_id}", "GET"): [
        (
            "wait",
            {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 30},
            "Answer when the task ends within this many seconds (else 202 after them).",
        )
    ],
    ("/agent/stream/{task_id}", "GET"): [
        ("last_event_id", {"type": "integer", "minimum": 0, "maximum": MAX_EVENT_ID}, "Resume after this event id.")
    ],
    ("/dlq", "GET"): [("queue", {"type": "string"}, "Only this work queue.")],
    ("/dlq", "DELETE"): [("queue", {"type": "string"}, "The work queue to purge (required).")],
    ("/dlq/replay", "POST"): [("queue", {"type": "string"}, "The work queue to replay (required).")],
    ("/events", "GET"): [
        ("type", {"type": "string"}, "Only events of this type."),
        ("since", {"type": "string"}, "ISO 8601 time; events created at or after it."),
        ("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "At most this many (default 100)."),
    ],
    ("/dashboard/api/tasks", "GET"): [
        ("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "At most this many (default 50)."),
        ("children", {"type": "boolean"}, "Include child tasks."),
        ("state", {"type": "string"}, "Only these states (comma-separated)."),
        ("workflow", {"type": "string", "maxLength": 64}, "Only this workflow."),
        ("tenant", {"type": "string", "maxLength": 64}, "Only this tenant (among those the caller sees)."),
        ("q", {"type": "string", "maxLength": 200}, "Text in the task's query, or the start of its id."),
        ("cursor", {"type": "string"}, "The `next` of the previous page."),
    ],
    ("/dashboard/api/overview", "GET"): [
        ("filters", {"type": "boolean"}, "Also the workflows, tenants and states the task list can be filtered by.")
    ],
    ("/dashboard/api/charts", "GET"): [
        ("range", {"type": "integer", "minimum": 60, "maximum": 31 * 86400}, "Seconds before `until` (default 3600)."),
        ("since", {"type": "string", "format": "date-time"}, "Start of the range (instead of `range`)."),
        ("until", {"type": "string", "format": "date-time"}, "End of the range (default: now)."),
    ],
    ("/dashboard/api/tasks/{task_id}/events", "GET"): [
        ("after", {"type": "integer", "minimum": 0, "maximum": MAX_EVENT_ID}, "Events after this id.")
    ],
}

IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "The same key and body within 24 hours answers 200 with the first task; another body, 422.",
}

#: Media types of answers that are not JSON.
MEDIA: dict[str, str] = {
    "/": "text/html",
    "/docs": "text/html",
    "/login": "text/html",
    "/metrics": "text/plain",
    "/agent/stream/{task_id}": "text/event-stream",
    "/static/{name}": "text/javascript",
}

#: Answers that are errors: ``{title, description}``.
ERROR_STATUSES = ("400", "401", "403", "404", "405", "409", "413", "415", "422", "429", "503")
#: Routes whose 202 is a new (or resumed) task.
SUBMISSIONS = ("/agent/execute", "/agent/resume/{workflow_id}")

ERROR = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "description": {"type": "string"}},
    "required": ["title"],
}
ACCEPTED = {
    "type": "object",
    "properties": {
        "task_id": {"type": "string"},
        "status": {"type": "string"},
        "status_url": {"type": "string"},
    },
    "required": ["task_id", "status"],
}


def routes(app: falcon.App[falcon.Request, falcon.Response]) -> Iterator[tuple[str, str, object]]:
    """Every (URI template, method, resource) the app answers with a responder of its own."""
    stack = list(app._router._roots)
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.resource is None or node.uri_template is None:
            continue
        for method in METHODS:
            if hasattr(node.resource, f"on_{method.lower()}"):
                yield node.uri_template, method, node.resource


def _summary(resource: object, method: str) -> str:
    doc = (getattr(resource, f"on_{method.lower()}").__doc__ or type(resource).__doc__ or "").strip()
    return doc.splitlines()[0] if doc else f"{method} {type(resource).__name__}"


def _operation(template: str, method: str, resource: object, body: dict[str, Any] | None) -> dict[str, Any]:
    scope = ROUTE_SCOPES.get((template, method), "admin")
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", template)
    ]
    parameters += [
        {"name": name, "in": "query", "required": False, "schema": schema, "description": text}
        for name, schema, text in QUERY.get((template, method), [])
    ]
    if (template, method) == ("/agent/execute", "POST"):
        parameters.append(IDEMPOTENCY_HEADER)
    media = MEDIA.get(template, "application/json")
    body_schema: dict[str, Any] = {"type": "string"} if media.startswith("text/") else {"type": "object"}
    if media == "text/event-stream":  # each event: its id, kind and JSON data
        body_schema = {
            "type": "object",
            "properties": {"id": {"type": "string"}, "event": {"type": "string"}, "data": {"type": "string"}},
        }
    success = {"description": "Success", "content": {media: {"schema": body_schema}}}
    error = {"description": "An error", "content": {"application/json": {"schema": ERROR}}}
    responses: dict[str, Any] = {"200": success}
    responses.update({status: error for status in ERROR_STATUSES})
    if template == "/login":  # a refused sign-in shows the form again
        form = {"description": "The form again, with why", "content": {"text/html": {"schema": {"type": "string"}}}}
        responses.update({"401": form, "403": form})
    responses["default"] = {
        "description": "Another answer",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
    if method == "POST" and media == "application/json":
        accepted = ACCEPTED if template in SUBMISSIONS or template.startswith("/tools/") else {"type": "object"}
        responses["202"] = {"description": "Accepted", "content": {"application/json": {"schema": accepted}}}
        responses["201"] = {"description": "Created", "content": {"application/json": {"schema": {"type": "object"}}}}
    if template == "/agent/result/{task_id}":
        responses["202"] = {
            "description": "Not finished yet",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    if template in ("/", "/login", "/logout"):
        responses["303"] = {"description": "Redirect (to sign in, or after it)"}
    operation: dict[str, Any] = {
        "summary": _summary(resource, method),
        "operationId": f"{method.lower()}_{re.sub(r'[^A-Za-z0-9]+', '_', template).strip('_') or 'root'}",
        "parameters": parameters,
        "responses": responses,
        "x-scope": scope,
        "security": [] if scope is None else [{"bearer": []}, {"session": []}],
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": copy.deepcopy(body)}}}
    if template == "/login" and method == "POST":
        operation["requestBody"] = {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {"api_key": {"type": "string"}, "csrf_token": {"type": "string"}},
                        "required": ["api_key", "csrf_token"],
                    }
                }
            },
        }
    return operation


def openapi_document(app: falcon.App[falcon.Request, falcon.Response], *, version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for template, method, resource in sorted(routes(app), key=lambda r: (r[0], r[1])):
        if template == "/tools/{name}":
            for tool, schema in sorted(TOOL_SCHEMAS.items()):
                path = f"/tools/{tool}"
                operation = _operation(path, method, resource, schema)
                operation["x-scope"] = ROUTE_SCOPES[(template, method)]
                operation["parameters"] = [
                    {
                        "name": "priority",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["low", "normal", "high"]},
                    }
                ]
                operation["operationId"] = f"post_tools_{tool}"
                paths.setdefault(path, {})[method.lower()] = operation
            continue
        paths.setdefault(template, {})[method.lower()] = _operation(
            template, method, resource, REQUEST_BODIES.get((template, method))
        )
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Interlock",
            "version": version,
            "description": "Durable asynchronous AI-agent work. Send `Authorization: Bearer <key>`; "
            "each operation's `x-scope` names the scope its key needs (`admin` includes all).",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "interlock_session"},
            }
        },
    }


class OpenApiResource:
    def __init__(self, app: falcon.App[falcon.Request, falcon.Response], *, version: str) -> None:
        self.app = app
        self.version = version
        self._document: dict[str, Any] | None = None

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The OpenAPI 3 document of this API."""
        if self._document is None:
            self._document = openapi_document(self.app, version=self.version)
        resp.media = self._document


DOCS = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Interlock API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:14px/1.4 system-ui,sans-serif;margin:24px;max-width:1100px}
section{border:1px solid #dde1e7;border-radius:6px;padding:8px 12px;margin:8px 0}
code,pre{font-size:12px}pre{background:#f6f7f9;padding:8px;overflow:auto}
.m{font-weight:700;display:inline-block;width:64px}</style></head>
<body><h1>Interlock API</h1><p>The machine-readable document is <a href="/openapi.json">/openapi.json</a>.
Authenticate with <code>Authorization: Bearer &lt;key&gt;</code>.</p><div id="ops"></div>
<script>
"use strict";
const entities = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"};
const esc = v => String(v ?? "").replace(/[&<>"']/g, c => entities[c]);
fetch("/openapi.json").then(r => r.json()).then(doc => {
  const out = [];
  for (const [path, ops] of Object.entries(doc.paths)) for (const [method, op] of Object.entries(ops)) {
    const body = op.requestBody ? Object.values(op.requestBody.content)[0].schema : null;
    const params = (op.parameters || []).map(p => `${esc(p.name)} (${esc(p.in)})`).join(", ");
    out.push(`<section><span class="m">${esc(method.toUpperCase())}</span><code>${esc(path)}</code>
      &nbsp; scope: <code>${esc(op["x-scope"] ?? "none")}</code><div>${esc(op.summary)}</div>
      ${params ? `<div>Parameters: ${params}</div>` : ""}
      ${body ? `<pre>${esc(JSON.stringify(body, null, 2))}</pre>` : ""}</section>`);
  }
  document.getElementById("ops").innerHTML = out.join("");
});
</script></body></html>
"""


class DocsResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """A page listing every operation, read from /openapi.json."""
        resp.content_type = falcon.MEDIA_HTML
        resp.text = DOCS
