"""Steady HTTP load for ``bench faults`` and ``bench soak``: a fixed rate of a fixed mix of work.

The mix is what issue 17 asks for: tasks of about a second (``bench_work``: two transactional steps
around a sleep), the reference article's checkpointed workflow (six checkpointed stages) and its
chord (three agents in parallel, then an aggregate). The agents answer with the offline stand-in
model. Every submission is counted by its answer under the phase current when it was sent.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests

__all__ = ["BODIES", "KINDS", "MIX", "TASK_SECONDS", "Load", "Phase"]

TASK_SECONDS = 1.0

BODIES: dict[str, dict[str, Any]] = {
    "work": {"workflow": "bench_work", "query": "load", "context": {"sleep": TASK_SECONDS}},
    "checkpointed": {
        "workflow": "checkpointed",
        "query": "durable execution under load",
        "context": {"documents": ["durable execution keeps checkpoints", "load tests find leaks"]},
    },
    "chord": {"workflow": "chord", "query": "durable execution under load", "context": {}},
}

#: One cycle of submissions: 80 % tasks, 10 % checkpointed workflows, 10 % chords, interleaved.
MIX: tuple[str, ...] = ("work", "work", "work", "work", "checkpointed", "work", "work", "work", "work", "chord")
KINDS: tuple[str, ...] = tuple(dict.fromkeys(MIX))


class _Target(Protocol):
    url: str


@dataclass
class Phase:
    """A stretch of the load (steady, one injection of one fault, the drain) and what it saw."""

    fault: str
    round: int
    began: float = 0.0  # time.time() of the injection
    ended: float = 0.0  # time.time() when the service was whole again
    answers: Counter[str] = field(default_factory=Counter)
    accepted: list[tuple[str, str]] = field(default_factory=list)  # (kind, task id)
    note: str = ""


class Load:
    """Submissions over HTTP at ``rate`` per second from a few threads, each counted under the current phase."""

    def __init__(self, stack: _Target, rate: float, *, mix: tuple[str, ...] = MIX, threads: int = 4) -> None:
        self.stack = stack
        self.rate = rate
        self.phase = Phase("steady", 0)
        self.phases: list[Phase] = [self.phase]
        self._kinds = itertools.cycle(mix)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(threads)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=30)

    def enter(self, phase: Phase) -> None:
        with self._lock:
            self.phase = phase
            self.phases.append(phase)

    def accepted(self) -> list[tuple[str, str]]:
        with self._lock:
            return [item for phase in self.phases for item in phase.accepted]

    def answers(self) -> Counter[str]:
        total: Counter[str] = Counter()
        with self._lock:
            for phase in self.phases:
                total.update(phase.answers)
        return total

    def _run(self, k: int) -> None:
        session = requests.Session()
        interval = len(self._threads) / self.rate
        next_at = time.monotonic() + k * interval / len(self._threads)
        while not self._stop.is_set():
            self._stop.wait(max(0.0, next_at - time.monotonic()))
            if self._stop.is_set():
                break
            next_at += interval
            with self._lock:
                phase, kind = self.phase, next(self._kinds)
            try:
                response = session.post(
                    f"{self.stack.url}/agent/execute",
                    json=BODIES[kind],
                    headers={"Idempotency-Key": str(uuid.uuid4())},
                    timeout=10,
                )
                answer = str(response.status_code)
                task_id = response.json().get("task_id") if response.status_code in (200, 202) else None
            except (requests.RequestException, ValueError) as exc:
                answer, task_id = f"no answer ({type(exc).__name__})", None
            with self._lock:
                phase.answers[answer] += 1
                if task_id:
                    phase.accepted.append((kind, str(task_id)))
