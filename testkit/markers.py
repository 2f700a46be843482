"""The marker tables that the benchmarked systems and the tests' workflows write to.

Created next to Interlock's own tables, never by its migrations: in the benchmark's scratch database
for every system (``bench.services.Scratch``), in the tests' database by the ``bench_runs`` fixture.
"""

from __future__ import annotations

__all__ = ["BENCH_TABLES"]

# bench_runs: one row per marker a task writes (start, done); bench_counts: completions per process.
BENCH_TABLES = """
CREATE TABLE IF NOT EXISTS bench_runs (
    task_id text NOT NULL, system text NOT NULL, kind text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS ix_bench_runs_task ON bench_runs (task_id);
CREATE TABLE IF NOT EXISTS bench_counts (pid int PRIMARY KEY, n bigint NOT NULL);
"""
