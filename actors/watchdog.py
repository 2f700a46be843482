"""One thread per process that raises an exception in another thread when its deadline passes.

A step's time limit used to start a ``threading.Timer`` per step: a new OS thread for every step
of every task, about a tenth of a worker's CPU on agent tasks (issue 16's profile). Here every
alarm of the process waits in one heap, watched by one thread started on first use (and again in a
forked child, which does not inherit it). A cancelled alarm stays in the heap until it surfaces or
the heap is rebuilt, whichever comes first.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from dataclasses import dataclass, field

from dramatiq.threading import raise_thread_exception

__all__ = ["Alarm", "arm"]


@dataclass(order=True)
class Alarm:
    """Raises ``exception`` in thread ``thread_id`` at ``deadline`` (``time.monotonic()``) unless cancelled."""

    deadline: float
    seq: int
    thread_id: int = field(compare=False)
    exception: type[BaseException] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)
    fired: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        """Disarm it. Once this returns the alarm cannot fire any more; if it fired before, the
        exception is already on its way to the thread (raised at its next bytecode)."""
        with _watchdog.condition:
            if not self.fired:
                self.cancelled = True
                _watchdog.cancelled += 1


class _Watchdog:
    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.heap: list[Alarm] = []
        self.cancelled = 0
        self.pid = 0
        self.seq = itertools.count()

    def arm(self, seconds: float, thread_id: int, exception: type[BaseException]) -> Alarm:
        alarm = Alarm(time.monotonic() + seconds, next(self.seq), thread_id, exception)
        with self.condition:
            if self.pid != os.getpid():  # first use in this process
                self.pid, self.heap, self.cancelled = os.getpid(), [], 0
                threading.Thread(target=self._watch, name="interlock-watchdog", daemon=True).start()
            if self.cancelled > 64 and self.cancelled > len(self.heap) // 2:
                self.heap = [a for a in self.heap if not a.cancelled]
                heapq.heapify(self.heap)
                self.cancelled = 0
            heapq.heappush(self.heap, alarm)
            if self.heap[0] is alarm:
                self.condition.notify()
        return alarm

    def _watch(self) -> None:
        with self.condition:
            while True:
                while self.heap and self.heap[0].cancelled:
                    heapq.heappop(self.heap)
                    self.cancelled -= 1
                if not self.heap:
                    self.condition.wait()
                    continue
                wait = self.heap[0].deadline - time.monotonic()
                if wait > 0:
                    self.condition.wait(wait)
                    continue
                alarm = heapq.heappop(self.heap)
                alarm.fired = True
                raise_thread_exception(alarm.thread_id, alarm.exception)


_watchdog = _Watchdog()


def arm(seconds: float, exception: type[BaseException], thread_id: int | None = None) -> Alarm:
    """Raise ``exception`` in ``thread_id`` (default: the calling thread) in ``seconds`` unless cancelled."""
    return _watchdog.arm(seconds, threading.get_ident() if thread_id is None else thread_id, exception)
