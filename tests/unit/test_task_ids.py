"""Task ids grow with time (so new tasks are written at the right edge of the indexes on their id)."""

from __future__ import annotations

import time
import uuid

from models.task_ids import new_task_id


def test_a_task_id_is_a_version_7_uuid_that_carries_its_creation_time() -> None:
    before = time.time_ns() // 1_000_000
    task_id = uuid.UUID(new_task_id())
    after = time.time_ns() // 1_000_000
    assert (task_id.version, task_id.variant) == (7, uuid.RFC_4122)
    assert before <= task_id.int >> 80 <= after


def test_task_ids_of_later_milliseconds_sort_after_earlier_ones_and_never_repeat() -> None:
    first = [new_task_id() for _ in range(1000)]
    deadline = time.monotonic() + 1
    while time.time_ns() // 1_000_000 <= uuid.UUID(first[-1]).int >> 80:
        assert time.monotonic() < deadline
    later = new_task_id()
    assert all(task_id < later for task_id in first)  # as text, the order of the tasks' indexes
    assert len(set(first)) == len(first)
