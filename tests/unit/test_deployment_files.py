"""The deployment files, proved without Docker: compose.yaml, Dockerfile, .env.example, the lock.

Docker cannot run here, so these tests read the files: the compose file against the Compose
specification's JSON schema, its services against the workflow catalogue and the settings, the
Dockerfile's instructions against what a production image needs (hadolint too, where installed).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from actors.catalogue import load_catalogue
from interlock.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_SCHEMA = ROOT.parent / "shared" / "data" / "compose-spec.schema.json"
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}")
SECRET_NAME = re.compile(r"PASS|SECRET|KEY|TOKEN|CREDENTIAL", re.IGNORECASE)
# Services that run Interlock's code on the schema: they must wait for the migration.
SCHEMA_USERS = ("api", "scheduler")


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def interlock_services() -> dict[str, dict[str, Any]]:
    """Services built from our image (the rest are RabbitMQ, PostgreSQL, Prometheus)."""
    return {name: service for name, service in services().items() if "build" in service}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    value = service["command"]
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def option(args: list[str], name: str) -> list[str]:
    """The values following ``--name`` up to the next option."""
    start = args.index(name) + 1
    values = []
    for arg in args[start:]:
        if arg.startswith("--"):
            break
        values.append(arg)
    return values


def agent_queues() -> set[str]:
    return {spec.queue for spec in load_catalogue(Settings.from_env({})).values()}


def is_secret_file(key: str, value: str) -> bool:
    """``X__FILE: /run/secrets/NAME`` (Grafana's convention): the secret is read from a Compose secret's file."""
    name = value.removeprefix("/run/secrets/")
    return key.endswith("__FILE") and value.startswith("/run/secrets/") and name in compose().get("secrets", {})


# -- compose.yaml -----------------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    if not COMPOSE_SCHEMA.exists():
        pytest.skip(f"the Compose JSON schema is not at {COMPOSE_SCHEMA}; nothing to validate against")
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
    assert "version" not in compose(), "the Compose specification has no top-level version"


def test_no_credential_is_written_in_the_compose_file() -> None:
    for name, service in services().items():
        for key, value in environment(service).items():
            if is_secret_file(key, value):
                continue
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[^}]+\}", value), f"{name}: {key} must come from the environment"
            for user_info in re.findall(r"://([^@/\s]+)@", value):
                _, _, password = user_info.partition(":")
                assert re.fullmatch(r"(\$\{[^}]+\})?", password), f"{name}: {key} has a literal password"
                assert "${" in user_info, f"{name}: {key} has literal credentials"
        assert "env_file" in service or "build" not in service, f"{name} must read .env"
    # The whole text too (anchors, list-style environments): with every ${...} taken out, no
    # secret-named key keeps a value and no URL keeps a password.
    text = INTERPOLATION.sub("", (ROOT / "compose.yaml").read_text())
    for line in text.splitlines():
        code = line.split("#", 1)[0]
        assignment = re.search(r"([A-Za-z_]*(?:PASS|SECRET|KEY|TOKEN)[A-Za-z_]*)\"?\s*[:=]\s*(\S*)", code, re.I)
        if assignment and is_secret_file(assignment.group(1), assignment.group(2).strip("\"'")):
            continue
        assert not (assignment and assignment.group(2).strip("\"'")), f"literal secret: {line.strip()}"
        assert not re.search(r"://[^@/\s:]*:[^@/\s]+@", code), f"literal password in a URL: {line.strip()}"


def test_required_credentials_fail_loudly_when_missing() -> None:
    text = (ROOT / "compose.yaml").read_text()
    required = {m["name"] for m in INTERPOLATION.finditer(text) if m["op"] == ":?"}
    assert {
        "POSTGRES_USER",
        "POSTGRES_PASSWORD",
        "POSTGRES_DB",
        "RABBITMQ_DEFAULT_USER",
        "RABBITMQ_DEFAULT_PASS",
        "RABBITMQ_DEFAULT_VHOST",
        "OPENAI_API_KEY",
    } <= required


def test_a_worker_service_per_agent_queue_with_its_configured_threads() -> None:
    defaults = Settings.from_env({})
    concurrency = dict(defaults.agent_concurrency)
    workers = {name: command(s) for name, s in services().items() if name.startswith("worker-")}
    served: dict[str, str] = {}
    for name, args in workers.items():
        assert args[0] == "worker", f"{name} must run `interlock worker`"
        assert option(args, "--processes") == ["1"], f"{name}: scale with replicas, not processes"
        for queue in option(args, "--queues"):
            assert queue not in served, f"{queue} is served by both {served[queue]} and {name}"
            served[queue] = name

    queues = agent_queues()
    assert set(served) == queues, f"queues without a worker: {queues - set(served)}; unknown: {set(served) - queues}"
    for queue in queues:
        if queue.startswith("events."):
            continue  # event subscriptions share worker-events
        assert f"worker-{queue}" in workers, f"no service worker-{queue}"
        assert option(workers[f"worker-{queue}"], "--queues") == [queue]
        expected = concurrency.get(queue, defaults.worker_threads)
        assert option(workers[f"worker-{queue}"], "--threads") == [str(expected)], f"worker-{queue} threads"
    for queue, threads in {"research": 2, "scraper": 5, "reviewer": 2, "planner": 1, "tools": 3}.items():
        assert option(workers[f"worker-{queue}"], "--threads") == [str(threads)]


def test_everything_on_the_schema_waits_for_the_migration() -> None:
    all_services = services()
    migrate = all_services["migrate"]
    assert command(migrate) == ["migrate"]
    assert migrate.get("restart") == "no"
    for backing in ("rabbitmq", "postgres"):
        assert migrate["depends_on"][backing]["condition"] == "service_healthy"
    users = [name for name in interlock_services() if name != "migrate"]
    assert set(SCHEMA_USERS) <= set(users)
    for name in users:
        depends = all_services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    for name, service in interlock_services().items():
        assert command(service)[0] != "dev", f"{name} must not run the embedded dev mode"
        env = environment(service)
        assert "@postgres:5432/" in env["INTERLOCK_DATABASE_URL"], name
        assert "@${RABBITMQ_HOST_1:-rabbitmq}:5672/" in env["INTERLOCK_BROKER_URL"], name


def test_backing_services_are_pinned_and_health_checked() -> None:
    all_services = services()
    rabbitmq, postgres, api = all_services["rabbitmq"], all_services["postgres"], all_services["api"]
    assert re.fullmatch(r"rabbitmq:3\.13\.\d+-management", rabbitmq["image"])
    assert {"127.0.0.1:5672:5672", "127.0.0.1:15672:15672"} <= set(rabbitmq["ports"])
    assert rabbitmq["healthcheck"]["test"] == ["CMD", "rabbitmq-diagnostics", "-q", "ping"]
    assert re.fullmatch(r"postgres:\d+\.\d+(-\w+)?", postgres["image"])
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    volume = postgres["volumes"][0].split(":")[0]
    assert volume in compose()["volumes"], "PostgreSQL's data must live in a named volume"
    assert command(api)[:3] == ["api", "--bind", "0.0.0.0:8000"]
    assert "/healthz" in " ".join(api["healthcheck"]["test"])
    assert command(all_services["scheduler"]) == ["scheduler"]
    prometheus = all_services["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    assert any(v.startswith("./deploy/prometheus.yml:") for v in prometheus["volumes"])


def test_ha_profile_is_a_three_node_cluster_that_nothing_else_requires() -> None:
    all_services = services()
    nodes = {name: service for name, service in all_services.items() if "ha" in service.get("profiles", [])}
    assert sorted(nodes) == ["rabbitmq-1", "rabbitmq-2", "rabbitmq-3"]
    discovery = (ROOT / "deploy" / "rabbitmq-ha.conf").read_text()
    for name, node in nodes.items():
        assert node["hostname"] == name, "the node name (and its data directory) must not change"
        assert re.fullmatch(r"rabbitmq:3\.13\.\d+-management", node["image"])
        assert f"rabbit@{name}" in discovery
        assert any(v.endswith(":/etc/rabbitmq/conf.d/20-cluster.conf:ro") for v in node["volumes"])
        assert node["volumes"][0].split(":")[0] in compose()["volumes"], "each node's data in its own volume"
        # The cookie is the ha profile's own: required by the node's command, never by Compose
        # (which interpolates the whole file, for deployments without the profile too).
        assert environment(node)["RABBITMQ_ERLANG_COOKIE"] == "${RABBITMQ_ERLANG_COOKIE:-}"
        assert "RABBITMQ_ERLANG_COOKIE" in " ".join(command(node))
    assert all("ha" not in s.get("profiles", []) for n, s in all_services.items() if n not in nodes)
    # Every Interlock service names one URL per node; without the profile all three are `rabbitmq`.
    url = environment(interlock_services()["api"])["INTERLOCK_BROKER_URL"]
    hosts = re.findall(r"@\$\{(RABBITMQ_HOST_\d):-rabbitmq\}:5672/", url)
    assert (hosts, url.count(";")) == (["RABBITMQ_HOST_1", "RABBITMQ_HOST_2", "RABBITMQ_HOST_3"], 2)
    text = (ROOT / "compose.yaml").read_text()
    required = {m["name"] for m in INTERPOLATION.finditer(text) if m["op"] == ":?"}
    assert not {"RABBITMQ_ERLANG_COOKIE", "RABBITMQ_HOST_1", "INTERLOCK_QUEUE_TYPE"} & required


def test_prometheus_scrapes_the_api_and_every_worker_service() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    names = {name for job in config["scrape_configs"] for sd in job.get("dns_sd_configs", []) for name in sd["names"]}
    workers = {name for name in services() if name.startswith("worker-")}
    assert {"api"} | workers <= names


def test_env_example_documents_every_interpolated_variable_with_placeholders() -> None:
    text = (ROOT / "compose.yaml").read_text()
    interpolated = {m["name"]: m["op"] for m in INTERPOLATION.finditer(text)}
    example = (ROOT / ".env.example").read_text()
    assigned = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", example, re.MULTILINE))
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, re.MULTILINE))
    for name, op in interpolated.items():
        assert name in documented, f".env.example does not mention {name}"
        if op == ":?":
            assert assigned.get(name), f"{name} is required: .env.example must give it a placeholder"
    for name in ("OPENAI_API_KEY", "INTERLOCK_GITHUB_WEBHOOK_SECRET", "INTERLOCK_SLACK_SIGNING_SECRET"):
        assert name in documented
    for name, value in assigned.items():
        if SECRET_NAME.search(name):
            assert "replace" in value, f"{name} must be an obvious placeholder, not {value!r}"
    settings_vars = set(Settings.from_env({}).to_env())
    for name in documented:
        if name.startswith("INTERLOCK_") and name not in {"INTERLOCK_IMAGE", "INTERLOCK_API_PORT"}:
            assert name in settings_vars, f".env.example names {name}, which is no setting"
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored
    assert ".git" in ignored


# -- Dockerfile -------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def test_dockerfile_base_image_is_pinned_to_an_exact_version() -> None:
    bases = [args.split()[0] for keyword, args in dockerfile() if keyword == "FROM"]
    assert bases, "no FROM"
    for base in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base), base


def test_dockerfile_runs_as_a_non_root_user() -> None:
    instructions = dockerfile()
    keywords = [keyword for keyword, _ in instructions]
    users = [(i, args) for i, (keyword, args) in enumerate(instructions) if keyword == "USER"]
    assert users, "the image must not run as root"
    last_user_at, user = users[-1]
    assert user.split(":")[0] not in {"root", "0"}, f"USER {user} is root"
    start = min(i for i, k in enumerate(keywords) if k in {"ENTRYPOINT", "CMD"})
    assert last_user_at < start, "USER must come before ENTRYPOINT/CMD"
    assert "RUN" not in keywords[last_user_at:], "build steps belong before USER; the user only runs Interlock"


def test_dockerfile_installs_pinned_dependencies_before_copying_the_code() -> None:
    instructions = dockerfile()
    copy_all = next((i for i, (k, a) in enumerate(instructions) if k == "COPY" and a.split()[0] == "."), None)
    install = next((i for i, (k, a) in enumerate(instructions) if k == "RUN" and "-r requirements.lock" in a), None)
    copy_lock = next((i for i, (k, a) in enumerate(instructions) if k == "COPY" and "requirements.lock" in a), None)
    assert copy_all is not None, "COPY . ."
    assert install is not None, "RUN pip install -r requirements.lock"
    assert copy_lock is not None, "COPY requirements.lock"
    assert copy_lock < install < copy_all, "dependencies must be installed before the code is copied"
    keywords = [keyword for keyword, _ in instructions]
    assert "HEALTHCHECK" in keywords
    entrypoint = json.loads(next(args for keyword, args in instructions if keyword == "ENTRYPOINT"))
    assert entrypoint == ["interlock"], "one image for every role: the compose commands are interlock arguments"


def test_lock_pins_every_runtime_dependency() -> None:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1, f"not an exact pin: {line}"
        assert specifiers[0].operator == "==", f"not an exact pin: {line}"
        pins[canonicalize_name(requirement.name)] = specifiers[0].version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # The image has the tracing extra too, so that setting an endpoint is all tracing takes.
    for dependency in project["project"]["dependencies"] + project["project"]["optional-dependencies"]["tracing"]:
        requirement = Requirement(dependency)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} vs {dependency}"
    for build_requirement in project["build-system"]["requires"]:
        requirement = Requirement(build_requirement)
        assert requirement.specifier.contains(pins[canonicalize_name(requirement.name)])


def test_hadolint_finds_nothing_to_warn_about() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed; the structural Dockerfile tests above still ran")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "warning", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
