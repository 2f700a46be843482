"""What the test suite and the benchmarks share: child processes, waiting with a deadline, the
stand-ins for the outside world, a private PostgreSQL cluster to restart, and the workflows (with
their marker tables) that both run.

Neither shipped nor imported by Interlock itself; it imports neither ``tests`` nor ``bench``, and its
third-party dependencies come with ``pip install -e '.[dev]'``. Importable from the project's root
(pytest's rootdir, and ``PYTHONPATH`` of the child processes that ``processes.base_env`` prepares).
"""
