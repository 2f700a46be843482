"""Benchmarks: Interlock against the reference article's Celery setup and plain Dramatiq (issue 6).

Not part of the test suite. Run ``python -m bench run --quick`` on the local RabbitMQ and PostgreSQL.
"""

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    from .cli import main as run

    return run(argv)
