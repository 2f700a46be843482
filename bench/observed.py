"""What Interlock's own instruments saw during a run: group-commit batch sizes and the outbox's delay.

The numbers come from the instruments operators see (the worker's ``/metrics``, the relay's
histogram, the group commit's batch observer), read before and after a measurement, so the report
shows batch sizes and commit-to-publish delays for exactly the tasks measured.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests
from prometheus_client import Histogram
from prometheus_client.parser import text_string_to_metric_families

from models.group_commit import observe_batches

__all__ = ["BatchSizes", "InProcessBatches", "PublishDelays", "worker_batches"]

WRITE_BATCH = "interlock_worker_write_batch_size"


@dataclass
class BatchSizes:
    """Writes and statements per kind; the mean batch is writes / statements."""

    writes: Counter[str] = field(default_factory=Counter)
    statements: Counter[str] = field(default_factory=Counter)

    def __sub__(self, earlier: BatchSizes) -> BatchSizes:
        return BatchSizes(self.writes - earlier.writes, self.statements - earlier.statements)

    def means(self) -> dict[str, float]:
        return {kind: self.writes[kind] / n for kind, n in sorted(self.statements.items()) if n}


def worker_batches(metrics_url: str) -> BatchSizes:
    """The batch histogram of an ``interlock worker``'s ``/metrics`` (summed over its processes)."""
    text = requests.get(metrics_url, timeout=10).text
    sizes = BatchSizes()
    for family in text_string_to_metric_families(text):
        if family.name != WRITE_BATCH:
            continue
        for sample in family.samples:
            kind = sample.labels.get("kind", "")
            if sample.name == f"{WRITE_BATCH}_sum":
                sizes.writes[kind] += int(sample.value)
            elif sample.name == f"{WRITE_BATCH}_count":
                sizes.statements[kind] += int(sample.value)
    return sizes


class InProcessBatches:
    """The batches of this process's writers (the benchmark's own submissions)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sizes = BatchSizes()
        observe_batches(self._seen)

    def _seen(self, kind: str, size: int) -> None:
        with self._lock:
            self.sizes.writes[kind] += size
            self.sizes.statements[kind] += 1

    def snapshot(self) -> BatchSizes:
        with self._lock:
            return BatchSizes(Counter(self.sizes.writes), Counter(self.sizes.statements))


@dataclass
class PublishDelays:
    """A snapshot of the relay's commit-to-publish histogram: count, sum, and cumulative buckets."""

    count: float = 0.0
    total: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)

    @classmethod
    def of(cls, histogram: Histogram) -> PublishDelays:
        snapshot = cls()
        for metric in histogram.collect():
            for sample in metric.samples:
                if sample.name.endswith("_count"):
                    snapshot.count = sample.value
                elif sample.name.endswith("_sum"):
                    snapshot.total = sample.value
                elif sample.name.endswith("_bucket"):
                    snapshot.buckets[float(sample.labels["le"])] = sample.value
        return snapshot

    def __sub__(self, earlier: PublishDelays) -> PublishDelays:
        return PublishDelays(
            self.count - earlier.count,
            self.total - earlier.total,
            {le: n - earlier.buckets.get(le, 0.0) for le, n in self.buckets.items()},
        )

    def summary(self) -> dict[str, Any]:
        """Mean delay (ms), the share published within 50 ms and 250 ms, and an upper bound of the p99."""
        if not self.count:
            return {}
        p99 = next((le for le, n in sorted(self.buckets.items()) if n >= 0.99 * self.count), float("inf"))
        return {
            "messages": int(self.count),
            "mean_ms": 1000 * self.total / self.count,
            "within_50ms": self.buckets.get(0.05, 0.0) / self.count,
            "within_250ms": self.buckets.get(0.25, 0.0) / self.count,
            "p99_at_most_ms": 1000 * p99,
        }
