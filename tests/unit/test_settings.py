"""Settings are read once from the environment, documented in docs/configuration.md, and never leak secrets."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from interlock.settings import Settings, SettingsError, markdown_table, setting_rows

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_the_embedded_ones() -> None:
    settings = Settings.from_env({})
    assert settings.effective_database_url.startswith("sqlite:///")
    assert not settings.uses_rabbitmq and settings.llm_offline
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
    assert settings.uses_rabbitmq and settings.max_retries == 5
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


def test_config_command_masks_secrets() -> None:
    env = {"OPENAI_API_KEY": "sk-very-secret-value", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "interlock.cli", "config"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "sk-very-secret-value" not in out.stdout
    assert "OPENAI_API_KEY" in out.stdout and "***" in out.stdout
    assert "INTERLOCK_MAX_RETRIES" in out.stdout


def test_config_error_is_reported_not_raised() -> None:
    env = {"INTERLOCK_MAX_RETRIES": "lots", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "interlock.cli", "config"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 2 and "INTERLOCK_MAX_RETRIES" in out.stderr


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
