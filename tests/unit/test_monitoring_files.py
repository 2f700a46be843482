"""The Prometheus alert rules and the Grafana dashboard in deploy/, proved without Prometheus or Grafana.

Neither promtool nor Grafana runs here, so these tests read the files: their structure, that
compose mounts and provisions them where the configuration says, and that every metric their
queries name is one Interlock exports. The exported names are taken from the exporters themselves
(the API's registry and the workers' metrics and cluster collector, on a scratch SQLite database),
so a metric renamed in the code fails here until the rules and the dashboard follow.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Metric
from prometheus_client.metrics import MetricWrapperBase

from actors.middleware import metrics as worker_metrics
from actors.runtime import Runtime
from interlock.settings import Settings
from models.migrations import upgrade
from web.metrics import ApiMetrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "interlock.json"
PROVISIONING = DEPLOY / "grafana" / "provisioning"
#: Series Prometheus makes itself: a target's health, and the alerts' own.
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}
#: Sample names by metric type, from a family's name (prometheus_client's exposition).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless",
}  # fmt: skip
DURATION = re.compile(r"^\d+(ms|s|m|h|d|w|y)$")


def sample_names(families: Iterable[Metric]) -> set[str]:
    return {family.name + suffix for family in families for suffix in SUFFIXES[family.type]}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every sample name the API's /metrics and a worker host's /metrics can show."""
    database = tmp_path_factory.mktemp("metrics") / "metrics.db"
    settings = Settings.from_env({}, database_url=f"sqlite:///{database}")
    upgrade(settings)
    runtime = Runtime.open(settings)
    try:
        names = sample_names(ApiMetrics(runtime.sessions).registry.collect())
        collector = worker_metrics.ClusterCollector(settings)
        names |= sample_names(collector.collect())
        if collector._runtime is not None:
            collector._runtime.close()
    finally:
        runtime.close()
    for value in vars(worker_metrics).values():
        if isinstance(value, MetricWrapperBase):
            names |= sample_names(value.collect())
    return names


def metric_names(expr: str) -> set[str]:
    """The series a PromQL expression selects (functions, labels, keywords and durations left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\$\{?\w+\}?", "1", text)  # Grafana variables ($__rate_interval)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word, rest = match.group(), text[match.end() :]
        if re.match(r"\s*\(", rest) or word in PROMQL_WORDS or DURATION.match(word):
            continue
        if match.start() > 0 and (text[match.start() - 1].isdigit() or text[match.start() - 1] == "."):
            continue  # a number's exponent or unit (1e-9)
        names.add(word)
    return names


def test_metric_names_are_read_from_promql() -> None:
    expr = 'histogram_quantile(0.95, sum by (le, route) (rate(x_bucket{status=~"5.."}[$__rate_interval]))) > 1e-9'
    assert metric_names(expr) == {"x_bucket"}
    assert metric_names('max by (q) (a{k="dead"}) - max by (q) (a offset 15m) > 0 or vector(0)') == {"a"}
    assert metric_names('absent(up{job="w"} == 1)') == {"up"}


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def balanced(expr: str) -> bool:
    depth = {"(": 0, "[": 0, "{": 0}
    closing = {")": "(", "]": "[", "}": "{"}
    for char in re.sub(r'"(?:[^"\\]|\\.)*"', "", expr):
        if char in depth:
            depth[char] += 1
        elif char in closing:
            depth[closing[char]] -= 1
            if depth[closing[char]] < 0:
                return False
    return not any(depth.values())


# -- alert rules ------------------------------------------------------------------------------


def test_alert_rules_are_well_formed() -> None:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    assert len({group["name"] for group in groups}) == len(groups)
    rules = alert_rules()
    assert len({rule["alert"] for rule in rules}) == len(rules), "alert names must be unique"
    for rule in rules:
        name = rule["alert"]
        assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, name
        assert re.fullmatch(r"Interlock[A-Z][A-Za-z]+", name), name
        assert balanced(rule["expr"]), f"{name}: unbalanced brackets"
        assert re.fullmatch(r"\d+[smhd]", rule["for"]), name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"], name
        assert rule["annotations"]["description"], name
        for text in rule["annotations"].values():
            assert text.count("{{") == text.count("}}"), f"{name}: unbalanced template"


def test_the_alerts_cover_what_operators_watch() -> None:
    by_metric: dict[str, set[str]] = {}
    for rule in alert_rules():
        for metric in metric_names(rule["expr"]):
            by_metric.setdefault(metric, set()).add(rule["alert"])
    for metric in (
        "interlock_queue_messages",  # dead letters growing, backlog
        "interlock_queue_oldest_pending_seconds",  # queue age
        "interlock_circuit_breaker_state",  # a breaker open for long
        "interlock_worker_tasks_total",  # task failure rate
        "interlock_http_requests_total",  # API error rate
        "interlock_worker_llm_cost_usd_total",  # cost per hour
        "up",  # a worker or the API down
    ):
        assert metric in by_metric, f"no alert on {metric}"
    jobs = {job["job_name"] for job in yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]}
    for rule in alert_rules():
        for job in re.findall(r'job="([^"]+)"', rule["expr"]):
            assert job in jobs, f"{rule['alert']}: no scrape job {job}"


def test_every_metric_of_the_alerts_is_exported(exported: set[str]) -> None:
    assert "interlock_queue_oldest_pending_seconds" in exported  # the exporters were read
    for rule in alert_rules():
        unknown = metric_names(rule["expr"]) - exported - PROMETHEUS_SERIES
        assert not unknown, f"{rule['alert']} names metrics nobody exports: {sorted(unknown)}"


# -- dashboard --------------------------------------------------------------------------------


def test_the_dashboard_is_well_formed() -> None:
    board = dashboard()
    assert board["uid"] == "interlock-overview"
    assert board["title"] == "Interlock"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = list(dashboard_panels())
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat", "table", "gauge", "bargauge"}, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        targets = panel["targets"]
        assert targets, panel["title"]
        assert len({t["refId"] for t in targets}) == len(targets), panel["title"]
        for target in targets:
            assert balanced(target["expr"]), f"{panel['title']}: unbalanced brackets"


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    queried = {
        metric for panel in dashboard_panels() for t in panel.get("targets", []) for metric in metric_names(t["expr"])
    }
    assert {
        "interlock_queue_messages",  # depth and dead letters
        "interlock_queue_oldest_pending_seconds",  # age
        "interlock_circuit_breaker_state",
        "interlock_worker_tasks_total",  # throughput and error rate
        "interlock_worker_task_duration_seconds_bucket",
        "interlock_http_requests_total",
        "interlock_worker_llm_tokens_total",
        "interlock_worker_llm_cost_usd_total",
    } <= queried


def test_every_metric_of_the_dashboard_is_exported(exported: set[str]) -> None:
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            unknown = metric_names(target["expr"]) - exported - PROMETHEUS_SERIES
            assert not unknown, f"panel {panel['title']!r} names metrics nobody exports: {sorted(unknown)}"


# -- how compose loads them -------------------------------------------------------------------


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path of a service's bind mounts."""
    found = {}
    for volume in service.get("volumes", []):
        host, container = volume.split(":")[:2]
        if host.startswith("./"):
            found[container] = host
    return found


def test_compose_loads_the_rules_the_datasource_and_the_dashboard() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    prometheus_mounts = mounts(services["prometheus"])
    rule_files = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["rule_files"]
    for rule_file in rule_files:
        assert prometheus_mounts.get(rule_file) == "./deploy/alerts.yml", f"{rule_file} is not mounted"

    grafana = services["grafana"]
    assert grafana["profiles"] == ["monitoring"]
    assert re.fullmatch(r"grafana/grafana(-oss)?:\d+\.\d+\.\d+", grafana["image"]), "pin Grafana's version"
    assert all(port.startswith("127.0.0.1:") for port in grafana["ports"]), "Grafana on loopback only"
    grafana_mounts = mounts(grafana)
    assert grafana_mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    for host in grafana_mounts.values():
        assert (ROOT / host).exists(), host

    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert [d["url"] for d in datasources] == ["http://prometheus:9090"]
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "interlock.yml").read_text())["providers"]
    dashboards_in = grafana_mounts[providers[0]["options"]["path"]]
    assert (ROOT / dashboards_in / DASHBOARD.name).exists()

    environment = grafana["environment"]
    password_file = environment["GF_SECURITY_ADMIN_PASSWORD__FILE"]
    secret = compose["secrets"][password_file.removeprefix("/run/secrets/")]
    assert secret["file"].removeprefix("./") in (ROOT / ".gitignore").read_text().split()
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
