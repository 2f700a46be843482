"""The scheduler: schedules from settings, one run per slot across schedulers, and the jobs it enqueues."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from actors.catalogue import discover
from actors.events.bus import EventBus
from actors.runtime import Runtime
from actors.submit import submit
from interlock.cli.scheduler import fire_slot
from interlock.cli.worker import start_worker
from interlock.settings import Settings
from models.base import utcnow
from models.events import Event, ScheduleSlot, WebhookDelivery, add_event, claim_delivery, claim_slot
from models.task_transitions import create_task, finish_task
from models.tasks import Task, TaskState
from tests.stack import Stack
from tests.support import wait_for_state, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]


def rows(sessions: Any, model: Any, *conditions: Any) -> list[Any]:
    with sessions() as session:
        return list(session.scalars(select(model).where(*conditions)))


def run_job(stack: Stack, job: str) -> Task:
    task = submit(stack.runtime.sessions, stack.broker, discover(), workflow=job, input={}, priority=0)
    return wait_for_state(stack.runtime.sessions, task.id, {"SUCCESS", "FAILURE"})


# -- schedules (parsing them: tests/unit/test_schedules.py) -----------------------------------


def test_the_scheduler_command_refuses_a_bad_schedule(settings: Settings) -> None:
    env = {**os.environ, **settings.to_env(), "INTERLOCK_SCHEDULE_CLEANUP_OLD_EVENTS": "at two"}
    done = subprocess.run(
        [sys.executable, "-m", "interlock.cli", "scheduler"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "INTERLOCK_SCHEDULE_CLEANUP_OLD_EVENTS='at two'" in done.stderr


# -- slots ----------------------------------------------------------------------------------


def test_only_the_first_claim_of_a_slot_enqueues(stack: Stack) -> None:
    bus = EventBus.for_runtime(stack.runtime, stack.broker)
    slot = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
    catalogue = discover()
    won = fire_slot(bus, catalogue, job="health_check", slot=slot, owner="scheduler-a")
    lost = fire_slot(bus, catalogue, job="health_check", slot=slot, owner="scheduler-b")
    assert won is not None
    assert lost is None
    [claimed] = rows(stack.runtime.sessions, ScheduleSlot)
    assert claimed.claimed_by == "scheduler-a"
    assert claimed.task_id == won
    [fired] = rows(stack.runtime.sessions, Event, Event.type == "schedule.fired")
    assert fired.data == {"job": "health_check", "slot": slot.isoformat(), "task_id": won, "scheduler": "scheduler-a"}
    assert claimed.event_id == fired.id
    wait_for_state(stack.runtime.sessions, won, "SUCCESS")


@pytest.mark.slow
def test_two_schedulers_run_each_slot_once(settings: Settings, tmp_path: Path) -> None:
    """Two real ``interlock scheduler`` processes share a 2-second job for about 20 seconds."""
    env = {
        **os.environ,
        **settings.to_env(),
        "INTERLOCK_SCHEDULE_HEALTH_CHECK": "every 2s",
        "INTERLOCK_SCHEDULE_MONITOR_DATA_SOURCES": "off",
        "INTERLOCK_SCHEDULE_CLEANUP_OLD_EVENTS": "off",
        "INTERLOCK_LOG_LEVEL": "INFO",
    }
    runtime = Runtime.open(settings)
    worker, worker_broker, worker_runtime = start_worker(settings, queues=None, threads=4)
    logs = [tmp_path / "scheduler-a.log", tmp_path / "scheduler-b.log"]
    schedulers = [
        subprocess.Popen(
            [sys.executable, "-m", "interlock.cli", "scheduler"],
            env=env,
            cwd=ROOT,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        for log in logs
    ]
    wanted = 10
    try:
        wait_until(lambda: all("running" in log.read_text() for log in logs), timeout=30, what="both schedulers up")
        wait_until(
            lambda: len(rows(runtime.sessions, ScheduleSlot)) >= wanted, timeout=wanted * 2 + 15, what="ten slots"
        )
    finally:
        for process in schedulers:
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(timeout=30) for process in schedulers]
    try:
        slots = sorted(rows(runtime.sessions, ScheduleSlot), key=lambda s: s.slot)
        times = [s.slot for s in slots]
        # Every claimed slot is a distinct 2-second step: none skipped, none twice.
        assert all(b - a == timedelta(seconds=2) for a, b in zip(times, times[1:], strict=False)), times
        assert all(s.task_id and s.event_id for s in slots)
        fired = rows(runtime.sessions, Event, Event.type == "schedule.fired")
        assert sorted(e.data["slot"] for e in fired) == [t.isoformat() for t in times]  # one event per slot
        tasks = rows(runtime.sessions, Task, Task.workflow == "health_check")
        assert sorted(t.id for t in tasks) == sorted(s.task_id for s in slots)  # one task per slot
        for task in tasks:
            wait_for_state(runtime.sessions, task.id, "SUCCESS")
        health = rows(runtime.sessions, Event, Event.type == "system.health")
        assert len(health) == len(slots)
        assert all(e.data["status"] == "healthy" for e in health)
        assert all(t.attempts == 1 for t in rows(runtime.sessions, Task, Task.workflow == "health_check"))

        # Both schedulers tried the slots: every slot has one winner and (nearly always) one loser.
        text_a, text_b = (log.read_text() for log in logs)
        enqueued = text_a.count("enqueued task") + text_b.count("enqueued task")
        lost = text_a.count("claimed by another scheduler") + text_b.count("claimed by another scheduler")
        assert enqueued == len(slots)
        assert lost >= len(slots) - 2, (text_a, text_b)
        assert codes == [0, 0]
        owners = {s.claimed_by for s in slots}
        print(
            f"\n{len(slots)} slots over {(times[-1] - times[0]).total_seconds():.0f}s, "
            f"{lost} lost claims, winners {sorted(owners)}"
        )
    finally:
        worker.stop()
        worker_broker.close()
        worker_runtime.close()
        runtime.close()


# -- the jobs -------------------------------------------------------------------------------


def test_health_check_records_database_and_broker(stack: Stack) -> None:
    task = run_job(stack, "health_check")
    assert task.state == "SUCCESS", task.error
    [event] = rows(stack.runtime.sessions, Event, Event.type == "system.health")
    assert event.published_by == task.id
    assert event.source == "health_check"
    assert event.data["status"] == "healthy"
    assert event.data["checks"]["database"]["status"] == "ok"
    assert event.data["checks"]["broker"]["status"] == "ok"
    assert "default" in event.data["queues"]


def test_cleanup_applies_retention(stack: Stack) -> None:
    sessions = stack.runtime.sessions
    settings = stack.settings
    old = utcnow() - timedelta(seconds=settings.task_retention + 3600)
    with sessions.begin() as session:
        for name, created in (("old", old), ("new", utcnow())):
            event = add_event(
                session,
                event_id=f"00000000-0000-4000-8000-00000000000{1 if name == 'old' else 2}",
                event_type=f"retention.{name}",
                source="test",
                data={},
                expires_at=created + timedelta(seconds=settings.event_retention),
                task_ids=[],
            )
            event.created_at = created
            claim_delivery(session, provider="test", delivery_id=name, event_id=event.id)
            claim_slot(session, job="health_check", slot=created, owner="test")
            create_task(
                session, task_id=f"task-{name}", workflow="agent", actor="interlock.agent", queue="default", input={}
            )
        session.execute(text("UPDATE webhook_deliveries SET received_at = :t WHERE delivery_id = 'old'"), {"t": old})
        session.execute(
            text("UPDATE schedule_slots SET claimed_at = :t WHERE claimed_by = 'test' AND slot = :t"), {"t": old}
        )
        create_task(
            session, task_id="task-running", workflow="agent", actor="interlock.agent", queue="default", input={}
        )
    with sessions.begin() as session:
        for task_id in ("task-old", "task-new"):
            finish_task(session, task_id, state=TaskState.SUCCESS, owner=None, result={})
        session.execute(text("UPDATE tasks SET finished_at = :t WHERE id IN ('task-old', 'task-running')"), {"t": old})

    task = run_job(stack, "cleanup_old_events")
    assert task.state == "SUCCESS", task.error
    deleted = task.result["deleted"]
    assert deleted["events"] == 1
    assert deleted["tasks"] == 1
    assert deleted["webhook_deliveries"] == 1
    assert deleted["schedule_slots"] == 1
    assert "tool_cache" in deleted  # the tools' cache is purged when its module offers it
    assert [e.type for e in rows(sessions, Event, Event.type.like("retention.%"))] == ["retention.new"]
    assert [d.delivery_id for d in rows(sessions, WebhookDelivery)] == ["new"]
    remaining = {t.id for t in rows(sessions, Task, Task.id.like("task-%"))}
    assert remaining == {"task-new", "task-running"}  # unfinished work is never purged


class _Source(BaseHTTPRequestHandler):
    """A loopback data source: ``/etag`` answers 304 to a matching If-None-Match, ``/plain`` has no validators."""

    state: dict[str, Any] = {"version": 1, "requests": []}

    def do_GET(self) -> None:
        version = self.state["version"]
        self.state["requests"].append((self.path, self.headers.get("If-None-Match")))
        body = f"dataset version {version}".encode()
        if self.path == "/etag" and self.headers.get("If-None-Match") == f'"v{version}"':
            self.send_response(304)
            self.end_headers()
            return
        self.send_response(200)
        if self.path == "/etag":
            self.send_header("ETag", f'"v{version}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def source() -> Iterator[str]:
    _Source.state = {"version": 1, "requests": []}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Source)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_monitor_publishes_new_data_only_when_a_source_changes(
    settings: Settings, source: str, fake_llm, make_stack
) -> None:
    watched = settings.replace(
        monitor_urls=f"{source}/etag, {source}/plain",
        monitor_sql="SELECT type FROM events WHERE type = 'monitor.marker' ORDER BY type",
        monitor_database_url=settings.database_url,
    )
    stack = make_stack(watched)
    first = run_job(stack, "monitor_data_sources")
    assert first.result["outcomes"] == {
        f"{source}/etag": "baseline",
        f"{source}/plain": "baseline",
        "sql": "baseline",
    }
    second = run_job(stack, "monitor_data_sources")
    assert set(second.result["outcomes"].values()) == {"unchanged"}
    assert ("/etag", '"v1"') in _Source.state["requests"]  # a conditional request, answered 304
    assert rows(stack.runtime.sessions, Event, Event.type == "new_data_arrived") == []

    _Source.state["version"] = 2
    EventBus.for_runtime(stack.runtime, stack.broker).publish("monitor.marker", {}, source="test")
    third = run_job(stack, "monitor_data_sources")
    assert sorted(third.result["changed"]) == sorted([f"{source}/etag", f"{source}/plain", "sql"])
    changes = rows(stack.runtime.sessions, Event, Event.type == "new_data_arrived")
    assert sorted(e.data["source"] for e in changes) == sorted([f"{source}/etag", f"{source}/plain", "sql"])
    assert all(e.published_by == third.id and len(e.task_ids) == 1 for e in changes)
    for event in changes:  # each change starts the new-data agent, which reports downstream
        wait_for_state(stack.runtime.sessions, event.task_ids[0], "SUCCESS")
    wait_until(
        lambda: len(rows(stack.runtime.sessions, Event, Event.type == "data_processed")) == 3,
        what="three data_processed events",
    )
