"""The real `interlock api` with authentication on: keys from the CLI, never in logs, and fuzzed
by Schemathesis from its own /openapi.json."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from interlock.settings import Settings
from models.security import ApiKey
from models.tasks import Task, TaskEvent
from tests.processes import ROOT, Proc, base_env, wait_http
from tests.stack import MakeStack, Stack
from tests.support import free_port, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.slow]

WEBHOOK_SECRETS = {
    "github_webhook_secret": "gh-secret-for-tests",
    "slack_signing_secret": "slack-secret-for-tests",
    "webhook_secret": "custom-secret-for-tests",
}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "interlock.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def live(
    settings: Settings, tmp_path: Path, make_stack: MakeStack
) -> Iterator[tuple[str, dict[str, str], Proc, Stack]]:
    """`interlock api` (auth on, DEBUG logs) and an in-process worker, so that ?wait= returns."""
    settings = settings.replace(auth="on", log_level="DEBUG", api_access_log=True, **WEBHOOK_SECRETS)
    stack = make_stack(settings)
    env = base_env(settings.to_env())
    port = free_port()
    with Proc(["api", "--bind", f"127.0.0.1:{port}", "--workers", "1"], env=env, log=tmp_path / "api.log") as api:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", proc=api)
        yield url, env, api, stack


def test_keys_from_the_cli_work_and_never_appear_in_logs(live) -> None:
    url, env, api, stack = live
    made = cli(env, "keys", "create", "--tenant", "acme", "--scope", "submit,read", "--json")
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert {"key", "id", "tenant", "scopes"} <= set(created)
    assert created["tenant"] == "acme"
    key = created["key"]
    listed = cli(env, "keys", "list", "--json")
    assert listed.returncode == 0
    assert created["id"] in listed.stdout
    assert key not in listed.stdout
    with stack.runtime.sessions() as session:
        assert session.scalar(select(func.count()).where(ApiKey.hash == key)) == 0  # stored only as a hash

    headers = {"Authorization": f"Bearer {key}"}
    assert requests.post(f"{url}/agent/execute", json={"query": "hi"}, timeout=10).status_code == 401
    submitted = requests.post(f"{url}/agent/execute", json={"query": "hi"}, headers=headers, timeout=10)
    assert submitted.status_code == 202, submitted.text
    status = requests.get(f"{url}/agent/status/{submitted.json()['task_id']}", headers=headers, timeout=10)
    assert status.status_code == 200
    assert requests.get(f"{url}/dlq", headers=headers, timeout=10).status_code == 403
    wrong = key[:-6] + "abcdef"
    assert (
        requests.get(f"{url}/dashboard/api/tasks", headers={"Authorization": f"Bearer {wrong}"}, timeout=10).status_code
        == 401
    )
    form = requests.get(f"{url}/login", timeout=10)
    requests.post(
        f"{url}/login",
        data={"api_key": key, "csrf_token": "x"},
        cookies=form.cookies,
        timeout=10,
        allow_redirects=False,
    )
    env_with_key = {**env, "INTERLOCK_API_KEY": key, "INTERLOCK_API_URL": url}
    assert cli(env_with_key, "status", submitted.json()["task_id"]).returncode == 0

    revoked = cli(env, "keys", "revoke", created["id"])
    assert revoked.returncode == 0, revoked.stderr
    # The API process reuses a key's lookup for INTERLOCK_API_KEY_CACHE_SECONDS: the revocation bites then.
    wait_until(
        lambda: requests.get(f"{url}/dashboard/api/tasks", headers=headers, timeout=10).status_code == 401,
        timeout=60,
        what="the revoked key to be refused",
    )
    api.stop()  # flush everything it logged
    log = api.output()
    assert "GET /dashboard/api/tasks" in log  # the access log is there, and DEBUG is on
    for secret in (key, wrong, key[4:20]):
        assert secret not in log, "an API key appeared in the API's log"


@pytest.mark.timeout(660)  # above the run's own 600 s limit: a loaded machine fuzzes slower
def test_schemathesis_finds_no_server_errors_or_schema_violations(live, tmp_path: Path) -> None:
    if shutil.which("schemathesis") is None and not (Path(sys.executable).parent / "schemathesis").exists():
        pytest.skip("schemathesis is not installed (pip install -e .[dev])")
    url, env, _, stack = live
    made = cli(env, "keys", "create", "--tenant", "fuzz", "--scope", "admin", "--json")
    key = json.loads(made.stdout)["key"]
    executable = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    result = subprocess.run(
        [
            executable,
            "run",
            f"{url}/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "20",
            "--seed",
            "20261126",
            "--phases",
            "examples,fuzzing",
            "--workers",
            "4",
            "--request-timeout",
            "40",
            "--generation-deterministic",
            "--header",
            f"Authorization: Bearer {key}",
            "--exclude-path",
            "/logout",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    (tmp_path / "schemathesis.txt").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    with stack.runtime.sessions() as session:  # no half-written task: each row has its first event
        orphans = session.scalar(
            select(func.count())
            .select_from(Task)
            .where(~select(TaskEvent.id).where(TaskEvent.task_id == Task.id).exists())
        )
    assert orphans == 0
