"""``interlock config``: every setting with its current value (secrets masked), or docs/configuration.md's table."""

from __future__ import annotations

import argparse

from interlock.settings import Settings, markdown_table, setting_rows

__all__ = ["run"]


def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.markdown:
        print(markdown_table())
        return 0
    width = max(len(name) for name, _, _ in setting_rows())
    for name, value, help_text in setting_rows(settings):
        print(f"{name:<{width}}  {value or '(empty)'}")
        print(f"{'':<{width}}  {help_text}")
    return 0
