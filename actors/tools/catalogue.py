"""The catalogue of tools. Each tool module in ``actors/tools/`` declares its tools with :func:`tool`.

A tool is a name, the JSON Schema of its arguments and the function that runs it in-process.
Adding a tool means adding one module under ``actors/tools/`` (or a function to one):
:func:`discover_tools` imports every module of the package, ``actors.agents.tools`` declares a
workflow on the ``tools`` queue for each tool, and ``POST /tools/{name}`` and the OpenAPI
document read :data:`TOOL_SCHEMAS`.

A batch tool (:func:`batch_tool`) has a schema but no function here: it runs as the coordinator
workflow of the same name (``actors.agents.batch_tools``), which fans a tool out over its targets.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import jsonschema
from sqlalchemy.orm import Session, sessionmaker

from actors.errors import InvalidInput
from interlock.settings import Settings

__all__ = [
    "TOOLS_PACKAGE",
    "URL_SCHEMA",
    "SCALAR_SCHEMA",
    "TOOL_SCHEMAS",
    "Tool",
    "ToolFn",
    "tool",
    "batch_tool",
    "discover_tools",
    "validate_args",
    "run_tool",
]

#: The package whose modules declare the tools; :func:`discover_tools` imports them all.
TOOLS_PACKAGE = "actors.tools"

#: Schema pieces the tools' argument schemas share.
URL_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 2048,
    "description": "An http:// or https:// URL.",
}
SCALAR_SCHEMA: dict[str, Any] = {"type": ["string", "number", "boolean", "null"]}

#: Argument fields that name a URL: whatever the tool, they must be http(s) URLs with a host.
URL_FIELDS = ("url", "endpoint")


class ToolFn(Protocol):
    """``fn(args, *, settings, sessions) -> result``: runs the tool in this process on valid ``args``."""

    def __call__(
        self, args: dict[str, Any], *, settings: Settings, sessions: sessionmaker[Session]
    ) -> dict[str, Any]: ...


F = TypeVar("F", bound=ToolFn)


@dataclass(frozen=True)
class Tool:
    name: str
    #: JSON Schema (draft 2020-12) of the arguments, shown in the OpenAPI document as it is.
    schema: dict[str, Any]
    #: The first line of its function's docstring, the description of its workflow.
    description: str
    #: Runs the tool in-process; ``None`` for a batch tool, which runs as a coordinator workflow.
    run: ToolFn | None = None
    #: The tool's own checks of schema-valid arguments, beyond what a schema can say (InvalidInput).
    check: Callable[[dict[str, Any]], object] | None = None


_TOOLS: dict[str, Tool] = {}


def _register(declared: Tool) -> Tool:
    known = _TOOLS.get(declared.name)
    if known is not None and known != declared:
        raise ValueError(f"tool {declared.name!r} is declared twice")
    _TOOLS[declared.name] = declared
    return declared


def tool(
    name: str, *, schema: dict[str, Any], check: Callable[[dict[str, Any]], object] | None = None
) -> Callable[[F], F]:
    """Declare ``fn(args, *, settings, sessions)`` as the tool ``name`` taking arguments valid under ``schema``.

    Its docstring's first line describes it (as the workflow's description); ``check`` runs on
    arguments that passed the schema, for rules a schema cannot state.
    """

    def register(fn: F) -> F:
        description = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _register(Tool(name=name, schema=schema, description=description, run=fn, check=check))
        return fn

    return register


def batch_tool(name: str, *, schema: dict[str, Any]) -> Tool:
    """Declare the batch tool ``name``, run by the coordinator workflow of the same name (described there)."""
    return _register(Tool(name=name, schema=schema, description=""))


@cache
def _import_tool_modules() -> None:
    package = importlib.import_module(TOOLS_PACKAGE)
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{TOOLS_PACKAGE}.{module.name}")


def discover_tools() -> dict[str, Tool]:
    """Every tool, by name, once every module of ``actors/tools/`` is imported.

    The tool modules import this one to declare their tools, so they are found and imported by
    name here, as the agents are (``actors.catalogue.discover``), not imported by this module.
    """
    _import_tool_modules()
    return dict(_TOOLS)


class _ToolSchemas(Mapping[str, dict[str, Any]]):
    """The argument schema of every tool, by name (read when used, so every tool is declared by then)."""

    def __getitem__(self, name: str) -> dict[str, Any]:
        return discover_tools()[name].schema

    def __iter__(self) -> Iterator[str]:
        return iter(discover_tools())

    def __len__(self) -> int:
        return len(discover_tools())


#: ``{tool name: JSON Schema of its arguments}``, what ``POST /tools/{name}`` validates with.
TOOL_SCHEMAS: Mapping[str, dict[str, Any]] = _ToolSchemas()


def validate_args(name: str, args: Any) -> dict[str, Any]:
    """Check ``args`` against the tool's JSON Schema and its own rules; InvalidInput says what is wrong."""
    tools = discover_tools()
    declared = tools.get(name)
    if declared is None:
        raise InvalidInput(f"unknown tool {name!r}; tools: {', '.join(sorted(tools))}")
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(declared.schema).iter_errors(args))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)
        raise InvalidInput(f"{where}: {error.message}" if where else error.message)
    for field in URL_FIELDS:
        if field in args:
            try:
                parts = urlsplit(args[field])
                usable = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
            except ValueError:
                usable = False
            if not usable:
                raise InvalidInput(f"{field} must be an http:// or https:// URL with a host")
    if declared.check is not None:
        declared.check(args)
    return dict(args)


def run_tool(
    name: str, args: Mapping[str, Any], *, settings: Settings, sessions: sessionmaker[Session]
) -> dict[str, Any]:
    """Validate ``args`` and run the tool ``name`` in this process (what the workflows and agents call)."""
    valid = validate_args(name, args)
    run = discover_tools()[name].run
    if run is None:
        raise InvalidInput(f"{name} is a batch tool: it runs as a task of its own, not in-process")
    return run(valid, settings=settings, sessions=sessions)
