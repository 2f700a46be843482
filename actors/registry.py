"""The catalogue of workflow types. Each agent module registers itself with :func:`workflow`.

Adding an agent type means adding one module under ``actors/agents/``: :func:`discover`
imports every module there, and the broker, the worker and the API read this catalogue.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import TaskContext

__all__ = ["WorkflowSpec", "workflow", "discover", "actor_name"]

WorkflowFn = Callable[["TaskContext"], dict[str, Any]]


@dataclass(frozen=True)
class WorkflowSpec:
    name: str
    fn: WorkflowFn
    queue: str
    description: str
    max_retries: int | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    submittable: bool = True

    @property
    def actor_name(self) -> str:
        return actor_name(self.name)


_CATALOGUE: dict[str, WorkflowSpec] = {}


def actor_name(workflow_name: str) -> str:
    return f"interlock.{workflow_name}"


def workflow(
    name: str,
    *,
    queue: str = "default",
    max_retries: int | None = None,
    time_limit: float | None = None,
    soft_time_limit: float | None = None,
    submittable: bool = True,
) -> Callable[[WorkflowFn], WorkflowFn]:
    """Register ``fn(ctx) -> result`` as the workflow ``name`` served on ``queue``.

    ``max_retries`` and the limits (seconds) default to the settings when left ``None``.
    """

    def register(fn: WorkflowFn) -> WorkflowFn:
        if name in _CATALOGUE and _CATALOGUE[name].fn is not fn:
            raise ValueError(f"workflow {name!r} is registered twice")
        _CATALOGUE[name] = WorkflowSpec(
            name=name,
            fn=fn,
            queue=queue,
            description=(fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "",
            max_retries=max_retries,
            time_limit=time_limit,
            soft_time_limit=soft_time_limit,
            submittable=submittable,
        )
        return fn

    return register


def discover(extra_modules: str | Sequence[str] = ()) -> dict[str, WorkflowSpec]:
    """Import every agent module (ours, then ``extra_modules``) and return the catalogue."""
    from . import agents

    for module in pkgutil.iter_modules(agents.__path__):
        importlib.import_module(f"{agents.__name__}.{module.name}")
    if isinstance(extra_modules, str):
        extra_modules = [name.strip() for name in extra_modules.split(",") if name.strip()]
    for name in extra_modules:
        importlib.import_module(name)
    return dict(_CATALOGUE)
