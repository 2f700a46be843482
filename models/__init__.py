"""Interlock's durable state: tasks, their events, checkpoints and parked messages."""

from .base import Base
from .breakers import CircuitBreaker
from .checkpoints import WorkflowCheckpoint
from .events import Event, MonitorState, ScheduleSlot, WebhookDelivery
from .queue_samples import QueueSample
from .rate_limits import RateLimitCounter, RateWindow
from .results import ActorResult
from .scheduled import ScheduledMessage
from .security import ApiKey, IdempotencyKey
from .task_calls import TaskCall
from .tasks import Task, TaskEvent, TaskState
from .tenants import TenantLimits, TenantUsage
from .tool_cache import ToolCacheEntry
from .web_sessions import DashboardSession, SignInToken
from .workers import WorkerProcess

__all__ = [
    "ActorResult",
    "ApiKey",
    "Base",
    "CircuitBreaker",
    "DashboardSession",
    "Event",
    "IdempotencyKey",
    "MonitorState",
    "QueueSample",
    "RateLimitCounter",
    "RateWindow",
    "Task",
    "TaskCall",
    "TaskEvent",
    "TaskState",
    "TenantLimits",
    "TenantUsage",
    "WorkflowCheckpoint",
    "ScheduledMessage",
    "ScheduleSlot",
    "SignInToken",
    "ToolCacheEntry",
    "WebhookDelivery",
    "WorkerProcess",
]
