"""``interlock scheduler``: enqueues the periodic jobs on time, and each slot once across schedulers.

Schedules come from settings (``INTERLOCK_SCHEDULE_<JOB>``): a five-field cron expression in UTC,
``every <N>s``, or ``off``. A slot is the time a job is due, as the trigger computes it, so every
scheduler computes the same slots (interval schedules are counted from a fixed epoch, not from
each scheduler's start). Whoever inserts the (job, slot) row into ``schedule_slots`` first
enqueues the job and publishes ``schedule.fired``; the others see the key taken and do nothing.
Run two or more schedulers for availability. The scheduler only enqueues: workers run the jobs.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import re
import signal
import threading
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

import dramatiq
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.executors.base import BaseExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from actors.broker import build_broker, wait_for_broker
from actors.catalogue import WorkflowSpec, discover
from actors.events.bus import EventBus
from actors.runtime import Runtime
from actors.submit import submit
from interlock.logs import configure_logging
from interlock.settings import Settings, SettingsError
from models.events import claim_slot, record_slot_outcome

__all__ = [
    "JOBS",
    "parse_schedule",
    "job_triggers",
    "fire_slot",
    "build_scheduler",
    "start_scheduler",
    "run_scheduler",
    "run",
]

logger = logging.getLogger(__name__)

#: Job (a workflow in ``actors/agents/scheduled_jobs.py``) -> the setting holding its schedule.
JOBS: Mapping[str, str] = {
    "monitor_data_sources": "schedule_monitor_data_sources",
    "cleanup_old_events": "schedule_cleanup_old_events",
    "health_check": "schedule_health_check",
}

#: Interval slots are counted from here, so that every scheduler computes the same ones.
INTERVAL_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

_EVERY = re.compile(r"every\s+(\d+)\s*s", re.IGNORECASE)
_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_schedule(expression: str, *, variable: str = "schedule") -> BaseTrigger | None:
    """A trigger (UTC) for ``every <N>s`` or a five-field cron expression; ``None`` for ``off``."""
    value = expression.strip()
    if value.lower() == "off":
        return None
    every = _EVERY.fullmatch(value)
    if every:
        seconds = int(every.group(1))
        if seconds < 1:
            raise SettingsError(f"{variable}={expression!r}: the interval must be at least 1 second")
        return IntervalTrigger(seconds=seconds, start_date=INTERVAL_EPOCH, timezone=UTC)
    fields = value.split()
    try:
        if len(fields) != 5:
            raise ValueError(f"it has {len(fields)} fields, not 5 (minute hour day month day-of-week)")
        minute, hour, day, month, day_of_week = fields
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=_cron_day_of_week(day_of_week),
            timezone=UTC,
        )
    except ValueError as exc:
        raise SettingsError(
            f"{variable}={expression!r} is not a schedule: use a five-field cron expression (UTC), "
            f"'every <N>s' or 'off' ({exc})"
        ) from exc


def _cron_day_of_week(field: str) -> str:
    """Cron numbers days from Sunday (0 or 7); APScheduler 3 from Monday. Names mean the same in both."""
    if field == "*" or re.fullmatch(r"[A-Za-z,-]+", field):
        return field
    days: list[str] = []
    for part in field.split(","):
        match = re.fullmatch(r"(\*|\d+)(?:-(\d+))?(?:/(\d+))?", part)
        if match is None:
            raise ValueError(f"day of week {part!r} is not understood")
        start, end, step = match.groups()
        low = 0 if start == "*" else int(start)
        high = 6 if start == "*" else int(end) if end else (7 if step else low)
        if not 0 <= low <= high <= 7 or (step is not None and int(step) < 1):
            raise ValueError(f"day of week {part!r} is out of range 0-7")
        days.extend(_CRON_DAYS[day] for day in range(low, high + 1, int(step or 1)))
    return ",".join(dict.fromkeys(days))


def job_triggers(settings: Settings) -> dict[str, BaseTrigger | None]:
    """Every job's trigger from settings; a bad expression is a :class:`SettingsError` naming it."""
    triggers = {}
    for job, field_name in JOBS.items():
        variable = Settings.__dataclass_fields__[field_name].metadata["env"]
        triggers[job] = parse_schedule(getattr(settings, field_name), variable=variable)
    return triggers


def fire_slot(
    bus: EventBus,
    catalogue: Mapping[str, WorkflowSpec],
    *,
    job: str,
    slot: datetime,
    owner: str,
) -> str | None:
    """Claim ``slot`` of ``job``; if this scheduler won it, enqueue the job and publish ``schedule.fired``.

    Returns the task id when this call enqueued the job, ``None`` when another scheduler had the slot.
    """
    slot = slot.astimezone(UTC)
    with bus.sessions.begin() as session:
        won = claim_slot(session, job=job, slot=slot, owner=owner)
    if not won:
        logger.info("slot %s of %s was claimed by another scheduler", slot.isoformat(), job)
        return None
    task = submit(
        bus.sessions, bus.broker, catalogue, workflow=job, input={"job": job, "slot": slot.isoformat()}, priority=0
    )
    event_id, _ = bus.publish(
        "schedule.fired",
        {"job": job, "slot": slot.isoformat(), "task_id": task.id, "scheduler": owner},
        source="scheduler",
    )
    with bus.sessions.begin() as session:
        record_slot_outcome(session, job=job, slot=slot, task_id=task.id, event_id=event_id)
    logger.info("slot %s of %s: enqueued task %s", slot.isoformat(), job, task.id)
    return task.id


class _SlotExecutor(BaseExecutor):  # type: ignore[misc]  # APScheduler 3 ships no type hints
    """Runs due jobs in threads and passes each the run time it is due for, as ``slot``.

    APScheduler's own executors call ``func(*args, **kwargs)`` and drop that time, yet the time
    the trigger computed is exactly what several schedulers can agree on.
    """

    def __init__(self, max_workers: int = 4) -> None:
        super().__init__()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="interlock-scheduler")

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        future = self._pool.submit(self._run, job, list(run_times))
        future.add_done_callback(lambda done: self._run_job_success(job.id, done.result()))

    def _run(self, job: Any, run_times: list[datetime]) -> list[JobExecutionEvent]:
        events = []
        for run_time in run_times:
            try:
                job.func(*job.args, **{**job.kwargs, "slot": run_time})
            except Exception as exc:  # a framework boundary: log it, the next slot will come
                logger.exception("job %s for slot %s failed", job.id, run_time.isoformat())
                events.append(
                    JobExecutionEvent(
                        EVENT_JOB_ERROR,
                        job.id,
                        job._jobstore_alias,
                        run_time,
                        exception=exc,
                        traceback=traceback.format_exc(),
                    )
                )
            else:
                events.append(JobExecutionEvent(EVENT_JOB_EXECUTED, job.id, job._jobstore_alias, run_time))
        return events

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait)


def build_scheduler(
    settings: Settings, bus: EventBus, catalogue: Mapping[str, WorkflowSpec], *, owner: str
) -> BackgroundScheduler:
    """A scheduler (not started) with one job per configured schedule."""
    triggers = job_triggers(settings)
    missing = sorted(job for job, trigger in triggers.items() if trigger is not None and job not in catalogue)
    if missing:
        raise SettingsError(f"no workflow is registered for the scheduled job(s) {missing}")
    scheduler = BackgroundScheduler(
        timezone=UTC,
        executors={"default": _SlotExecutor()},
        # One run for the latest due slot after a stall; a slow enqueue never blocks the next slot.
        job_defaults={"coalesce": True, "max_instances": 3, "misfire_grace_time": None},
    )
    for job, trigger in triggers.items():
        if trigger is not None:
            fire = partial(fire_slot, bus, catalogue, job=job, owner=owner)
            # ``slot`` is a placeholder here (APScheduler checks the signature); the executor sets it.
            scheduler.add_job(fire, trigger, kwargs={"slot": None}, id=job, name=job)
    return scheduler


def start_scheduler(
    settings: Settings, runtime: Runtime, broker: dramatiq.Broker, catalogue: Mapping[str, WorkflowSpec]
) -> BackgroundScheduler:
    """Build and start the scheduler in this process (``interlock dev`` runs it next to the worker)."""
    scheduler = build_scheduler(settings, EventBus.for_runtime(runtime, broker), catalogue, owner=runtime.owner)
    scheduler.start()
    for job in scheduler.get_jobs():
        logger.info("scheduled %s (%s), next slot %s", job.id, job.trigger, job.next_run_time)
    return scheduler


def run(settings: Settings, args: argparse.Namespace) -> int:
    """``interlock scheduler``."""
    configure_logging(settings.log_level, settings.log_format)
    return run_scheduler(settings)


def run_scheduler(settings: Settings) -> int:
    """Serve until SIGTERM or SIGINT."""
    job_triggers(settings)  # refuse a bad schedule before connecting to anything
    runtime = Runtime.open(settings)
    try:
        catalogue = discover(settings.agent_modules)
        broker = build_broker(settings, runtime, catalogue)
        wait_for_broker(broker)
        scheduler = start_scheduler(settings, runtime, broker, catalogue)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        logger.info("scheduler %s running", runtime.owner)
        while not stop.wait(1.0):
            pass
        scheduler.shutdown(wait=True)
        broker.close()
    finally:
        runtime.close()
    return 0
