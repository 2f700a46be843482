"""The catalogue of workflow types. Each agent module registers itself with :func:`workflow`.

Adding an agent type means adding one module under ``actors/agents/``: :func:`discover`
imports every module there, and the broker, the worker and the API read this catalogue.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from interlock.settings import Settings, parse_pairs

if TYPE_CHECKING:
    from .context import TaskContext

__all__ = ["WorkflowSpec", "workflow", "discover", "load_catalogue", "actor_name"]

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
    stages: tuple[str, ...] = ()

    @property
    def actor_name(self) -> str:
        return actor_name(self.name)

    def limits(self, settings: Settings) -> tuple[float, float]:
        """(hard, soft) time limits in seconds: the workflow's own, else the settings'."""
        hard = self.time_limit or settings.time_limit
        return hard, min(self.soft_time_limit or settings.soft_time_limit, hard)


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
    stages: Sequence[str] = (),
) -> Callable[[WorkflowFn], WorkflowFn]:
    """Register ``fn(ctx) -> result`` as the workflow ``name`` served on ``queue``.

    ``max_retries`` and the limits (seconds) default to the settings when left ``None``.
    ``stages`` names the durable steps in order, so a resume can say where it picks up.
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
            stages=tuple(stages),
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


def load_catalogue(settings: Settings) -> dict[str, WorkflowSpec]:
    """The catalogue as this deployment runs it: extra modules loaded, queue overrides applied."""
    catalogue = discover(settings.agent_modules)
    for name, queue in parse_pairs(settings.agent_queues).items():
        if name not in catalogue:
            raise ValueError(f"INTERLOCK_AGENT_QUEUES names unknown agent {name!r}")
        catalogue[name] = dataclasses.replace(catalogue[name], queue=queue)
    return catalogue
