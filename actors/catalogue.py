"""The catalogue of workflow types. Each agent module registers itself with :func:`workflow`.

Adding an agent type means adding one module under ``actors/agents/``: :func:`discover`
imports every module there, and the broker, the worker and the API read this catalogue.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from actors.priority_bands import canonical_name
from interlock.settings import Settings

__all__ = [
    "AGENTS_PACKAGE",
    "WorkflowFn",
    "WorkflowSpec",
    "workflow",
    "discover",
    "load_catalogue",
    "actor_name",
    "spec_for_actor",
]

#: ``fn(ctx) -> result``, where ``ctx`` is an ``actors.context.TaskContext``. The catalogue sits
#: below the context (the runtime it builds on keeps a catalogue), so it does not name the type.
WorkflowFn = Callable[[Any], dict[str, Any]]
W = TypeVar("W", bound=WorkflowFn)

#: The package whose every module is an agent; :func:`discover` imports them all.
AGENTS_PACKAGE = "actors.agents"


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
    #: The Dramatiq actor's name, when the workflow names its own (``interlock.<name>`` otherwise).
    actor: str | None = None
    #: Names this workflow's actor had before: messages queued under them still run it.
    former_actor_names: tuple[str, ...] = ()
    #: Workflows that are not submittable but that this one starts itself as children.
    children: tuple[str, ...] = ()

    @property
    def actor_name(self) -> str:
        return self.actor or actor_name(self.name)

    @property
    def actor_names(self) -> tuple[str, ...]:
        """Every actor name whose messages run this workflow, its current name first."""
        return (self.actor_name, *self.former_actor_names)

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
    actor_name: str | None = None,
    former_actor_names: Sequence[str] = (),
    children: Sequence[str] = (),
) -> Callable[[W], W]:
    """Register ``fn(ctx) -> result`` as the workflow ``name`` served on ``queue``.

    ``max_retries`` and the limits (seconds) default to the settings when left ``None``.
    ``stages`` names the durable steps in order, so a resume can say where it picks up.
    ``actor_name`` names the Dramatiq actor (shown in dead letters and metrics) when
    ``interlock.<name>`` will not do; ``former_actor_names`` keeps messages sent under an
    earlier name running after a rename.
    ``submittable`` workflows can be started with ``POST /agent/execute``, and so by any
    workflow as a child (``ctx.call``); ``children`` names the workflows that are not
    submittable which this one starts itself (a tenant's task may start no other).
    """

    def register(fn: W) -> W:
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
            actor=actor_name,
            former_actor_names=tuple(former_actor_names),
            children=tuple(children),
        )
        return fn

    return register


def spec_for_actor(catalogue: Mapping[str, WorkflowSpec], name: str) -> WorkflowSpec | None:
    """The workflow a message for actor ``name`` runs (current or former name, or a priority band's
    twin of either: ``actors.priority_bands``), if any."""
    name = canonical_name(name)
    # Looked up several times per task: try the workflow the default actor name names first.
    spec = catalogue.get(name.removeprefix("interlock."))
    if spec is not None and spec.actor_name == name:
        return spec
    return next((spec for spec in catalogue.values() if name in spec.actor_names), None)


def discover(extra_modules: str | Sequence[str] = ()) -> dict[str, WorkflowSpec]:
    """Import every agent module (ours, then ``extra_modules``) and return the catalogue.

    The agents sit above everything else in ``actors`` (they use the task context), so they are
    found and imported by name here, as plugins are, not imported by this module.
    """
    agents = importlib.import_module(AGENTS_PACKAGE)
    for module in pkgutil.iter_modules(agents.__path__):
        importlib.import_module(f"{AGENTS_PACKAGE}.{module.name}")
    if isinstance(extra_modules, str):
        extra_modules = [name.strip() for name in extra_modules.split(",") if name.strip()]
    for name in extra_modules:
        importlib.import_module(name)
    return dict(_CATALOGUE)


def load_catalogue(settings: Settings) -> dict[str, WorkflowSpec]:
    """The catalogue as this deployment runs it: extra modules loaded, queue overrides applied."""
    catalogue = discover(settings.agent_modules)
    for name, queue in settings.agent_queues.items():
        if name not in catalogue:
            raise ValueError(f"INTERLOCK_AGENT_QUEUES names unknown agent {name!r}")
        catalogue[name] = dataclasses.replace(catalogue[name], queue=queue)
    owners: dict[str, str] = {}
    for spec in catalogue.values():
        for actor in spec.actor_names:
            if owners.setdefault(actor, spec.name) != spec.name:
                raise ValueError(f"workflows {owners[actor]!r} and {spec.name!r} both use the actor name {actor!r}")
    return catalogue
