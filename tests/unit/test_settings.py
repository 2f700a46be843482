"""Settings are read once from the environment, documented in docs/configuration.md, and never leak secrets."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from interlock.limits import Limit
from interlock.settings import Settings, SettingsError, markdown_table, setting_rows

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_the_embedded_ones() -> None:
    settings = Settings.from_env({})
    assert settings.effective_database_url.startswith("sqlite:///")
    assert not settings.uses_rabbitmq
    assert settings.llm_offline
    assert (settings.time_limit, settings.soft_time_limit, settings.max_retries) == (3600.0, 3300.0, 3)


def test_values_are_converted_and_postgres_means_psycopg3() -> None:
    settings = Settings.from_env(
        {
            "INTERLOCK_DATABASE_URL": "postgresql://u@h/db",
            "INTERLOCK_BROKER_URL": "amqp://g:g@h:5672/",
            "INTERLOCK_MAX_RETRIES": "5",
            "INTERLOCK_TIME_LIMIT": "90",
            "INTERLOCK_SOFT_TIME_LIMIT": "60.5",
        }
    )
    assert settings.effective_database_url == "postgresql+psycopg://u@h/db"
    assert settings.uses_rabbitmq
    assert settings.max_retries == 5
    assert (settings.time_limit, settings.soft_time_limit) == (90.0, 60.5)


@pytest.mark.parametrize(
    "env",
    [
        {"INTERLOCK_MAX_RETRIES": "three"},
        {"INTERLOCK_TIME_LIMIT": "10", "INTERLOCK_SOFT_TIME_LIMIT": "20"},
        {"INTERLOCK_LOG_FORMAT": "xml"},
    ],
)
def test_bad_values_are_clear_errors(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        Settings.from_env(env)


def test_configuration_page_lists_every_setting_with_its_default() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert markdown_table() in page, "run python scripts/update-docs"
    for name, _, _ in setting_rows():
        assert f"`{name}`" in page


def test_configuration_page_lists_every_tool_limit() -> None:
    table = (ROOT / "docs" / "configuration.md").read_text()
    for variable in (
        "INTERLOCK_SCRAPE_MAX_BYTES",
        "INTERLOCK_HTTP_TIMEOUT",
        "INTERLOCK_TOOLS_STATEMENT_TIMEOUT_MS",
        "INTERLOCK_TOOLS_MAX_ROWS",
        "INTERLOCK_API_MAX_BYTES",
        "INTERLOCK_HTTP_MAX_REDIRECTS",
        "INTERLOCK_TOOLS_ALLOW_HOSTS",
        "INTERLOCK_TOOLS_DATABASE_URL",
        "INTERLOCK_CACHE_TTL_API",
        "INTERLOCK_BREAKER_THRESHOLD",
        "INTERLOCK_BREAKER_RESET",
    ):
        assert re.search(rf"^\| `{variable}` \|", table, re.M), variable
    assert "| `INTERLOCK_CACHE_TTL_API` | `1800` |" in table


def test_config_command_masks_secrets() -> None:
    env = {"OPENAI_API_KEY": "sk-very-secret-value", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "interlock.cli", "config"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "sk-very-secret-value" not in out.stdout
    assert "OPENAI_API_KEY" in out.stdout
    assert "***" in out.stdout
    assert "INTERLOCK_MAX_RETRIES" in out.stdout


def test_config_error_is_reported_not_raised() -> None:
    env = {"INTERLOCK_MAX_RETRIES": "lots", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "interlock.cli", "config"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "INTERLOCK_MAX_RETRIES" in out.stderr


def test_config_command_masks_the_passwords_inside_urls() -> None:
    env = {
        "INTERLOCK_DATABASE_URL": "postgresql://interlock:db-pass-1@db.internal:5432/interlock",
        "INTERLOCK_BROKER_URL": "amqp://worker:broker%2Fpass-2@mq.internal:5672/%2F",
        "INTERLOCK_TOOLS_DATABASE_URL": "postgresql://reader:tools-pass-3@tools.internal/warehouse?sslmode=require",
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        [sys.executable, "-m", "interlock.cli", "config"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    for secret in ("db-pass-1", "broker%2Fpass-2", "broker/pass-2", "tools-pass-3"):
        assert secret not in out.stdout
    assert "postgresql://interlock:***@db.internal:5432/interlock" in out.stdout
    assert "amqp://worker:***@mq.internal:5672/%2F" in out.stdout
    assert "postgresql://reader:***@tools.internal/warehouse?sslmode=require" in out.stdout


def test_whole_seconds_are_printed_without_a_decimal_point() -> None:
    env = {"INTERLOCK_SOFT_TIME_LIMIT": "60.5", "INTERLOCK_STAGE_TIME_LIMIT": "45", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "interlock.cli", "config"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    shown = dict(line.split(None, 1) for line in out.stdout.splitlines() if line.startswith("INTERLOCK_"))
    assert shown["INTERLOCK_TIME_LIMIT"] == "3600"  # a default
    assert shown["INTERLOCK_STAGE_TIME_LIMIT"] == "45"  # set as a whole number
    assert shown["INTERLOCK_SOFT_TIME_LIMIT"] == "60.5"  # a fraction keeps its decimals
    table = markdown_table()
    assert "| `INTERLOCK_TIME_LIMIT` | `3600` |" in table
    assert not re.search(r"`\d+\.0`", table)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
        ("amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:***@127.0.0.1:5672/"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
    ],
)
def test_url_passwords_are_masked_and_the_rest_kept(url: str, shown: str) -> None:
    from interlock.settings import mask_password

    assert mask_password(url) == shown


def test_settings_are_read_once_into_typed_values() -> None:
    settings = Settings.from_env(
        {
            "INTERLOCK_RATE_LIMITS": "scraper=10/m, tools=2/s",
            "INTERLOCK_LLM_RPM": "gpt-4o=500,*=60",
            "INTERLOCK_LLM_PRICES": "gpt-4o-mini=0.15/0.60,*=2",
            "INTERLOCK_AGENT_QUEUES": "scraper=tools",
            "INTERLOCK_AGENT_CONCURRENCY": "research=2,default=8",
            "INTERLOCK_TOOLS_ALLOW_HOSTS": " localhost , 10.0.0.0/8,",
            "INTERLOCK_AGENT_MODULES": "my.agents",
            "INTERLOCK_AUTH": "off",
        }
    )
    assert settings.rate_limits == {"scraper": Limit(10, 60.0), "tools": Limit(2, 1.0)}
    assert settings.llm_rpm == {"gpt-4o": Limit(500, 60.0), "*": Limit(60, 60.0)}
    assert settings.llm_tpm == {}
    assert settings.llm_prices == {"gpt-4o-mini": (0.15, 0.6), "*": (2.0, 2.0)}
    assert settings.agent_queues == {"scraper": "tools"}
    assert settings.agent_concurrency == {"research": 2, "default": 8}
    assert settings.tools_allow_hosts == ("localhost", "10.0.0.0/8")
    assert (settings.agent_modules, settings.monitor_urls) == (("my.agents",), ())
    assert settings.auth is False
    defaults = Settings.from_env({})
    assert defaults.auth is True
    assert defaults.rate_limits == {"scraper": Limit(10, 60.0), "tools": Limit(30, 60.0)}
    assert Settings.from_env({"INTERLOCK_RATE_LIMITS": ""}).rate_limits == {}  # set but empty: no limits


def test_to_env_reproduces_typed_settings_in_a_child_process() -> None:
    settings = Settings.from_env(
        {
            "INTERLOCK_RATE_LIMITS": "default=5/s,scraper=3/h",
            "INTERLOCK_LLM_TPM": "gpt-4o=30000",
            "INTERLOCK_LLM_PRICES": "m=0.1/0.3",
            "INTERLOCK_MONITOR_URLS": "http://a/x, http://b/y",
            "INTERLOCK_AUTH": "off",
            "INTERLOCK_SOFT_TIME_LIMIT": "60.5",
        }
    )
    env = settings.to_env()
    assert env["INTERLOCK_RATE_LIMITS"] == "default=5/s,scraper=3/h"
    assert (env["INTERLOCK_AUTH"], env["INTERLOCK_MONITOR_URLS"]) == ("off", "http://a/x,http://b/y")
    assert Settings.from_env(env) == settings


def test_text_given_for_a_typed_setting_is_read_like_its_variable() -> None:
    settings = Settings.from_env({}, rate_limits="default=2/s", auth="off", tools_allow_hosts="127.0.0.1")
    assert (settings.rate_limits, settings.auth) == ({"default": Limit(2, 1.0)}, False)
    assert settings.replace(auth="on", monitor_urls="http://a, http://b").monitor_urls == ("http://a", "http://b")
    assert settings.replace(rate_limits="").rate_limits == {}
    with pytest.raises(SettingsError, match="INTERLOCK_AUTH"):
        settings.replace(auth="yes")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INTERLOCK_AUTH": "ON"}, "INTERLOCK_AUTH must be 'on' or 'off'"),
        ({"INTERLOCK_AUTH": ""}, "INTERLOCK_AUTH must be 'on' or 'off'"),
        ({"INTERLOCK_RATE_LIMITS": "scraper=10"}, "cannot read rate limit 'scraper=10'"),
        ({"INTERLOCK_LLM_RPM": "gpt-4o=5/m"}, "expected model=count"),
        ({"INTERLOCK_LLM_PRICES": "m=cheap"}, "INTERLOCK_LLM_PRICES: expected model=prompt/completion dollars"),
        ({"INTERLOCK_AGENT_QUEUES": "scraper"}, "INTERLOCK_AGENT_QUEUES: expected name=value"),
        ({"INTERLOCK_AGENT_CONCURRENCY": "research=two"}, "INTERLOCK_AGENT_CONCURRENCY: expected name=count"),
    ],
)
def test_bad_typed_values_are_settings_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env(env)


def test_secrets_and_url_passwords_are_marked_on_their_fields() -> None:
    secrets = {f.name for f in fields(Settings) if f.metadata["secret"]}
    assert {"api_key", "openai_api_key", "webhook_secret", "monitor_database_url"} <= secrets
    settings = Settings.from_env(
        {name: "postgresql://u:hunter2@h/db" for name in ("INTERLOCK_WEBHOOK_SECRET", "INTERLOCK_DATABASE_URL")}
    )
    shown = {name: value for name, value, _ in setting_rows(settings)}
    assert shown["INTERLOCK_WEBHOOK_SECRET"] == "***"
    assert shown["INTERLOCK_DATABASE_URL"] == "postgresql://u:***@h/db"


def test_config_command_prints_typed_settings_as_they_are_written() -> None:
    env = {"INTERLOCK_AUTH": "off", "INTERLOCK_LLM_RPM": "gpt-4o=500", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "interlock.cli", "config"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    shown = dict(line.split(None, 1) for line in out.stdout.splitlines() if line.startswith("INTERLOCK_"))
    assert shown["INTERLOCK_AUTH"] == "off"
    assert shown["INTERLOCK_LLM_RPM"] == "gpt-4o=500"
    assert shown["INTERLOCK_RATE_LIMITS"] == "scraper=10/m,tools=30/m"
    assert shown["INTERLOCK_AGENT_CONCURRENCY"] == "research=2,scraper=5,reviewer=2,planner=1,tools=3,default=8"
