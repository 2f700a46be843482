"""``interlock api``: replace this process with gunicorn serving ``web.wsgi:get_app()``."""

from __future__ import annotations

import argparse
import os
import sys

from interlock.settings import Settings

__all__ = ["run"]


def run(settings: Settings, args: argparse.Namespace) -> int:
    workers = args.workers or settings.api_workers
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        args.bind,
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        str(settings.api_threads),
    ]
    if settings.api_access_log:  # an operator's choice: a line per request costs CPU on every request
        command += ["--access-logfile", "-"]
    command.append("web.wsgi:get_app()")
    os.execvp(command[0], command)  # noqa: S606 - replace this process with gunicorn
    return 0  # pragma: no cover
