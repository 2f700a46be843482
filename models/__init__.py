"""Interlock's durable state: tasks, their events, checkpoints and parked messages."""

from .base import Base
from .checkpoints import WorkflowCheckpoint
from .rate_limits import RateLimitCounter
from .results import ActorResult
from .scheduled import ScheduledMessage
from .tasks import Task, TaskEvent, TaskState

__all__ = [
    "ActorResult",
    "Base",
    "RateLimitCounter",
    "Task",
    "TaskEvent",
    "TaskState",
    "WorkflowCheckpoint",
    "ScheduledMessage",
]
