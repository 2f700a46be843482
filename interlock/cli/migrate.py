"""``interlock migrate``: upgrade the database schema to head (a deploy step), or ``--check`` it."""

from __future__ import annotations

import argparse

from interlock.settings import Settings
from models.migrations import check, upgrade

__all__ = ["run"]


def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.check:
        ok, detail = check(settings)
        print(detail)
        return 0 if ok else 1
    upgrade(settings)
    print("database schema is at head")
    return 0
