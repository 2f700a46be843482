"""The dashboard end to end in headless Chromium (Debian's), against the real API process."""

from __future__ import annotations

import shutil

import pytest

from tests.processes import Proc, base_env, wait_http
from tests.support import free_port

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"


def test_dashboard_shows_a_task_reaching_100_percent_and_its_page(settings, fake_llm, tmp_path, make_stack) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if shutil.which(CHROMIUM) is None:
        pytest.skip("Debian's chromium is not installed")
    fake_llm.latency = 0.4
    make_stack(settings)  # the worker
    port = free_port()
    env = base_env(settings.replace(auth="off").to_env())  # explicitly: signing in is tested in test_security
    with Proc(["api", "--bind", f"127.0.0.1:{port}", "--workers", "1"], env=env, log=tmp_path / "api.log") as api:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz", proc=api)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                console: list[str] = []  # the page runs under a strict CSP: it must not trip it
                page.on("console", lambda message: console.append(message.text))
                page.goto(f"{base}/")
                page.fill("#query", "dashboard run")
                page.click("#submit button")
                row = page.locator("tr.task").first
                row.wait_for(timeout=15_000)
                sync_api.expect(row).to_have_attribute("data-state", "SUCCESS", timeout=30_000)
                sync_api.expect(row.locator(".bar")).to_have_attribute("data-progress", "100")
                task_id = row.get_attribute("data-task-id")
                assert page.locator("#queues tr").count() >= 1
                page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

                row.locator("a").click()
                sync_api.expect(page.locator("#task")).to_have_attribute("data-task-id", task_id)
                sync_api.expect(page.locator("#task-state")).to_have_text("SUCCESS", timeout=10_000)
                sync_api.expect(page.locator("#timeline tr.event").last).to_contain_text("SUCCESS", timeout=10_000)
                steps = page.locator("#timeline tr.event").all_inner_texts()
                assert any("synthesis" in s for s in steps), steps
                assert "fake-llm answer" in page.locator("#result").inner_text()
                page.screenshot(path=str(tmp_path / "task.png"), full_page=True)
                assert not [m for m in console if "Content Security Policy" in m], console
                width = page.locator("#summary .bar").evaluate("bar => bar.style.width")
                assert width == "100%"  # set by script: style attributes in markup are refused
            finally:
                browser.close()
