"""``interlock tenants``: per-tenant concurrency caps and monthly token budgets, in the database directly."""

from __future__ import annotations

import argparse
import json
import sys

from actors.runtime import Runtime
from interlock.settings import Settings
from models.tenants import get_limits, list_limits, set_limits

__all__ = ["run"]


def run(settings: Settings, args: argparse.Namespace) -> int:
    runtime = Runtime.open(settings)
    try:
        with runtime.sessions.begin() as session:
            if args.tenants_action == "list":
                print(json.dumps(list_limits(session), indent=2))
                return 0
            current = get_limits(session, args.name)
            concurrency = current.max_concurrency if current else None
            tokens = current.monthly_tokens if current else None
            if args.max_concurrency is not None:
                concurrency = args.max_concurrency or None
            if args.monthly_tokens is not None:
                tokens = args.monthly_tokens or None
            if (concurrency or 0) < 0 or (tokens or 0) < 0:
                print("interlock: limits must not be negative", file=sys.stderr)
                return 2
            set_limits(session, args.name, max_concurrency=concurrency, monthly_tokens=tokens)
            print(json.dumps({"tenant": args.name, "max_concurrency": concurrency, "monthly_tokens": tokens}))
    finally:
        runtime.close()
    return 0
