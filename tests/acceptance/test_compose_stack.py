"""compose.yaml run for real without Docker: each service's command, environment and start order.

The services built from our image are started as local processes in the order their
``depends_on`` gives (``migrate`` first, and to completion), with the environment Compose would
give them: ``.env.example`` standing in for ``.env``, then the service's ``environment`` with its
``${...}`` interpolated. The hostnames ``rabbitmq`` and ``postgres`` are mapped to the local
servers by rewriting the URLs to the test's own database and vhost; the API binds a free loopback
port instead of ``0.0.0.0:8000``. A task submitted over HTTP must then reach SUCCESS, and one that
fans out to the planner, research, scraper and reviewer queues proves each worker service serves
its queue.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import yaml

from interlock.settings import Settings
from tests.processes import ROOT, Proc, base_env, wait_http
from tests.services import scratch_database
from tests.support import free_port, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.slow]

INTERPOLATION = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")
#: INTERLOCK_AUTH too: this test submits without a key (authentication is tested in test_security*).
LOCAL_SETTINGS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "INTERLOCK_MODEL", "INTERLOCK_LLM_TIMEOUT", "INTERLOCK_AUTH")


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``, ``$$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match["name"], match["op"], match["arg"] or ""
        value = variables.get(name)
        empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in {":?", "?"} and empty:
            raise AssertionError(f"compose would refuse to start: {name}: {arg}")
        if op in {":-", "-"} and empty:
            return arg
        if op in {":+", "+"}:
            return "" if empty else arg
        return value or ""

    return INTERPOLATION.sub(replace, value)


def read_dotenv(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", line.strip())
        if match:
            values[match[1]] = match[2].strip().strip("\"'")
    return values


def start_order(services: dict[str, dict[str, Any]]) -> list[str]:
    """Services in an order that respects ``depends_on`` (Compose's own start order)."""
    ordered: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"depends_on cycle: {path + (name,)}"
        if name in ordered:
            return
        for dependency in services[name].get("depends_on") or {}:
            visit(dependency, path + (name,))
        ordered.append(name)

    for name in services:
        visit(name, ())
    return ordered


def map_url(compose_url: str, local_url: str, host: str) -> str:
    """The compose URL points at the ``host`` service; the local one at the test's server."""
    parts, local = urlsplit(compose_url), urlsplit(local_url)
    assert parts.hostname == host, compose_url
    assert parts.username, f"{compose_url} must carry its credentials"
    assert parts.password, f"{compose_url} must carry its credentials"
    assert parts.scheme.split("+")[0] == local.scheme.split("+")[0]
    return local_url


@pytest.fixture
def scratch_database_url() -> Iterator[str]:
    """An empty database, so that the stack's own ``migrate`` service creates the schema."""
    with scratch_database("interlock_compose") as url:
        yield url


def service_env(service: dict[str, Any], dotenv: dict[str, str], local: dict[str, str]) -> dict[str, str]:
    env = base_env()
    if service.get("env_file"):
        env.update(dotenv)  # .env.example stands in for .env
    compose_env = {key: interpolate(str(value), dotenv) for key, value in (service.get("environment") or {}).items()}
    compose_env["INTERLOCK_DATABASE_URL"] = map_url(
        compose_env["INTERLOCK_DATABASE_URL"], local["INTERLOCK_DATABASE_URL"], "postgres"
    )
    compose_env["INTERLOCK_BROKER_URL"] = map_url(
        compose_env["INTERLOCK_BROKER_URL"], local["INTERLOCK_BROKER_URL"], "rabbitmq"
    )
    env.update(compose_env)
    env.update({name: local[name] for name in LOCAL_SETTINGS})  # the fake LLM instead of OpenAI
    env["INTERLOCK_WORKER_METRICS_PORT"] = str(free_port())  # many workers on one host
    return env


def service_args(name: str, service: dict[str, Any], api_bind: str) -> list[str]:
    command = service["command"]
    args = shlex.split(command) if isinstance(command, str) else [str(part) for part in command]
    if "--bind" in args:
        args[args.index("--bind") + 1] = api_bind  # loopback only, on a free port
    return args


def _finished(url: str, task_id: str) -> dict[str, Any] | None:
    status: dict[str, Any] = requests.get(f"{url}/agent/status/{task_id}", timeout=5).json()
    return status if status["state"] in {"SUCCESS", "FAILURE", "CANCELLED"} else None


def _logs(running: dict[str, Proc]) -> str:
    return "\n".join(f"--- {name}\n{proc.output()[-1500:]}" for name, proc in running.items())


def test_the_compose_services_run_as_processes_and_complete_a_task(
    settings: Settings, scratch_database_url: str, tmp_path: Path
) -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    ours = {name: s for name, s in services.items() if "build" in s and not s.get("profiles")}
    assert {"migrate", "api", "scheduler", "worker-default"} <= set(ours)
    dotenv = read_dotenv(ROOT / ".env.example")
    local = settings.replace(database_url=scratch_database_url).to_env()
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    order = [name for name in start_order(services) if name in ours]
    assert order[0] == "migrate", order
    with ExitStack() as stack:
        running: dict[str, Proc] = {}
        for name in order:
            service = ours[name]
            for dependency, rule in (service.get("depends_on") or {}).items():
                condition = rule.get("condition", "service_started") if isinstance(rule, dict) else "service_started"
                if dependency in running and condition == "service_completed_successfully":
                    process = running[dependency].process
                    assert process is not None
                    code = process.wait(timeout=120)
                    assert code == 0, f"{dependency} exited {code}:\n{running[dependency].output()}"
                elif dependency in running and condition == "service_healthy":
                    wait_http(f"{url}/healthz", proc=running[dependency])
            proc = Proc(
                service_args(name, service, f"127.0.0.1:{port}"),
                env=service_env(service, dotenv, local),
                log=tmp_path / f"{name}.log",
            )
            running[name] = stack.enter_context(proc)

        assert "database schema is at head" in running["migrate"].output()
        wait_http(f"{url}/healthz", proc=running["api"])
        ready = requests.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text

        submitted = {
            workflow: requests.post(
                f"{url}/agent/execute", json={"query": f"compose {workflow}", "workflow": workflow}, timeout=10
            )
            for workflow in ("agent", "multi_agent")
        }
        for workflow, response in submitted.items():
            assert response.status_code == 202, response.text
            task_id = response.json()["task_id"]

            try:
                body = wait_until(lambda: _finished(url, task_id), timeout=90, interval=0.2, what=f"task {task_id}")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{_logs(running)}") from None
            assert body is not None
            assert body["state"] == "SUCCESS", (body, _logs(running))
            assert body["result"]["metadata"] is not None
            if workflow == "multi_agent":
                children = {child["agent"]: child["state"] for child in body["children"]}
                assert children == dict.fromkeys(("planner", "research", "scraper", "reviewer"), "SUCCESS")

        for name, proc in running.items():
            if name != "migrate":
                assert proc.process is not None
                assert proc.process.poll() is None, f"{name} died:\n{proc.output()}"
