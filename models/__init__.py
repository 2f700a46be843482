"""Interlock's durable state: tasks, their events, checkpoints and parked messages."""

from .base import Base
from .breakers import CircuitBreaker
from .checkpoints import WorkflowCheckpoint
from .events import Event, MonitorState, ScheduleSlot, WebhookDelivery
from .rate_limits import RateLimitCounter, RateWindow
from .results import ActorResult
from .scheduled import ScheduledMessage
from .security import ApiKey, IdempotencyKey
from .tasks import Task, TaskEvent, TaskState
from .tenants import TenantLimits, TenantUsage
from .tool_cache import ToolCacheEntry
from .web_sessions import DashboardSession, SignInToken

__all__ = [
    "ActorResult",
    "ApiKey",
    "Base",
    "CircuitBreaker",
    "DashboardSession",
    "Event",
    "IdempotencyKey",
    "MonitorState",
    "RateLimitCounter",
    "RateWindow",
    "Task",
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
]
