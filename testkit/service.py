"""What the private services share: ``with Service() as s:`` starts it and always closes it."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["PrivateService"]


class PrivateService:
    """A service of the tests' own (a PostgreSQL cluster, a RabbitMQ node): ``start()`` and ``close()``."""

    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()  # a half-started service leaves no process or directory behind
            raise

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
