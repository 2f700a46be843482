"""The dashboard end to end in headless Chromium (Debian's), against the real API process and a worker.

Each test saves screenshots of the pages it looked at in its ``tmp_path`` (the path is printed);
with ``INTERLOCK_SCREENSHOTS=DIR`` set they are also copied to DIR (how docs/images/ is made).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import insert

from actors.agents.checkpointed import STAGES
from interlock.settings import Settings
from models.base import utcnow
from models.queue_samples import record_samples
from models.task_calls import record_call
from models.tasks import Task
from testkit.fakes.openai_server import FakeOpenAIServer
from tests.processes import Proc, base_env, wait_http
from tests.stack import MakeStack, Stack
from tests.support import free_port, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
PRICES = "test-model=0.15/0.60"


@pytest.fixture
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if shutil.which(CHROMIUM) is None:
        pytest.skip("Debian's chromium is not installed")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


class Dashboard:
    """A worker in this process, the API as a real ``interlock api`` process, a Chromium page on it."""

    def __init__(self, stack: Stack, base: str, page: Any, shots: Path) -> None:
        self.stack, self.base, self.page, self.shots = stack, base, page, shots
        self.console: list[str] = []  # the pages run under a strict CSP: they must not trip it
        page.on("console", lambda message: self.console.append(message.text))
        page.on("pageerror", lambda error: self.console.append(f"page error: {error}"))

    def submit(self, **body: Any) -> str:
        response = requests.post(f"{self.base}/agent/execute", json=body, timeout=10)
        assert response.status_code == 202, response.text
        return str(response.json()["task_id"])

    def state(self, task_id: str) -> str:
        return str(requests.get(f"{self.base}/agent/status/{task_id}", timeout=10).json()["state"])

    def wait_for(self, task_id: str, state: str, timeout: float = 60) -> None:
        wait_until(lambda: self.state(task_id) == state, timeout=timeout, what=f"task {task_id} {state}")

    def shot(self, name: str) -> None:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        copies = os.environ.get("INTERLOCK_SCREENSHOTS")
        if copies:
            shutil.copy(path, Path(copies) / path.name)

    def chart(self, canvas: str) -> Any:
        """What Chart.js drew on ``canvas``: its labels and datasets."""
        return self.page.evaluate(
            """id => { const chart = Chart.getChart(document.getElementById(id));
                       return {labels: chart.data.labels, data: chart.data.datasets.map(d => d.data)}; }""",
            canvas,
        )

    def no_policy_errors(self) -> None:
        assert not [m for m in self.console if "Content Security Policy" in m or "page error" in m], self.console


@contextmanager
def dashboard(settings: Settings, make_stack: MakeStack, browser: Any, tmp_path: Path) -> Iterator[Dashboard]:
    stack = make_stack(settings)  # the worker
    port = free_port()
    env = base_env(settings.to_env())  # authentication off: signing in is tested in test_security
    with Proc(["api", "--bind", f"127.0.0.1:{port}", "--workers", "1"], env=env, log=tmp_path / "api.log") as api:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz", proc=api)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        print(f"screenshots in {tmp_path}")
        yield Dashboard(stack, base, page, tmp_path)


@pytest.fixture
def priced(settings: Settings) -> Settings:
    return settings.replace(llm_prices=PRICES, queue_sample_interval=1.0)


def test_a_task_page_draws_one_bar_per_step_in_order_its_children_and_tokens(
    priced: Settings, fake_llm: FakeOpenAIServer, make_stack: MakeStack, browser: Any, tmp_path: Path
) -> None:
    fake_llm.latency = 0.3
    with dashboard(priced, make_stack, browser, tmp_path) as ui:
        steps_id = ui.submit(query="Why do agents need durable steps?", workflow="checkpointed")
        team_id = ui.submit(query="Plan a week in Lisbon", workflow="multi_agent")
        fake_llm.fail_next(1, status=429, retry_after=1.5, match="[stage:analyzing] Query: Rate limited")
        retried_id = ui.submit(query="Rate limited once, then fine", workflow="checkpointed")
        for task_id in (steps_id, team_id, retried_id):
            ui.wait_for(task_id, "SUCCESS")
        expect = pytest.importorskip("playwright.sync_api").expect
        page = ui.page

        page.goto(f"{ui.base}/#/task/{steps_id}")
        expect(page.locator("#task-state")).to_have_text("SUCCESS", timeout=15_000)
        steps = page.locator("#spans tr[data-kind=step]")
        expect(steps).to_have_count(len(STAGES))
        assert [steps.nth(i).get_attribute("data-label") for i in range(len(STAGES))] == list(STAGES)
        drawn = ui.chart("waterfall")
        labels = [label.strip() for label in drawn["labels"]]
        assert [label for label in labels if label in STAGES] == list(STAGES)  # one bar per step, in order
        bars = drawn["data"][0]
        step_bars = [bars[i] for i, label in enumerate(labels) if label in STAGES]
        assert all(end > start for start, end in step_bars)
        assert [start for start, _ in step_bars] == sorted(start for start, _ in step_bars)
        assert len([label for label in labels if label.startswith("LLM ")]) == 3
        assert int(page.locator("#tokens-tile").get_attribute("data-tokens")) > 0
        expect(page.locator("#spans tr[data-kind=llm]").first).to_contain_text("$0.0")  # priced per call
        assert '"status": "completed"' in page.locator("#result").inner_text()  # the result, folded below
        ui.shot("task-page")

        page.goto(f"{ui.base}/#/task/{retried_id}")  # a 429: the failed step, its call, the backoff, attempt 2
        expect(page.locator("#spans tr[data-kind=backoff]")).to_have_count(1, timeout=15_000)
        expect(page.locator("#spans tr[data-kind=step][data-status=failed]")).to_have_attribute(
            "data-label", "analyzing"
        )
        expect(page.locator("#spans tr[data-kind=llm][data-status=failed]")).to_contain_text("429")
        attempts = page.locator("#spans tr[data-kind=attempt]")
        expect(attempts).to_have_count(2)
        expect(attempts.first).to_have_attribute("data-status", "retry")
        ui.shot("task-page-retry")

        page.goto(f"{ui.base}/#/task/{team_id}")
        children = page.locator("#tree > li.child")
        expect(children).to_have_count(4, timeout=15_000)
        assert [children.nth(i).locator("strong").inner_text() for i in range(4)] == [
            "planner",
            "research",
            "scraper",
            "reviewer",
        ]
        expect(page.locator("#tree li.child[data-state=SUCCESS]")).to_have_count(4)
        assert len([label for label in ui.chart("waterfall")["labels"] if label.strip().startswith("child ")]) == 4
        ui.shot("task-page-children")
        planner = children.first.get_attribute("data-task-id")
        children.first.locator("a").first.click()
        expect(page.locator("#task")).to_have_attribute("data-task-id", planner)
        expect(page.locator("#crumbs")).to_contain_text("parent")
        ui.no_policy_errors()
        width = page.locator("#head .bar").evaluate("bar => bar.style.width")
        assert width == "100%"  # set by script: style attributes in markup are refused


def test_a_running_task_is_cancelled_from_its_page(
    settings: Settings, fake_llm: FakeOpenAIServer, make_stack: MakeStack, browser: Any, tmp_path: Path
) -> None:
    fake_llm.latency = 3.0  # each LLM call takes a while: the task is running when we cancel it
    with dashboard(settings, make_stack, browser, tmp_path) as ui:
        expect = pytest.importorskip("playwright.sync_api").expect
        task_id = ui.submit(query="A long analysis we will stop")
        page = ui.page
        page.goto(f"{ui.base}/#/task/{task_id}")
        expect(page.locator("#task-state")).to_have_text("PROCESSING", timeout=15_000)
        expect(page.locator("#live")).to_be_visible()
        expect(page.locator("#spans tr[data-kind=attempt][data-status=running]")).to_have_count(1)
        in_flight = page.locator("#spans tr[data-kind=llm][data-status=running]")  # the call it waits on
        expect(in_flight).to_have_count(1, timeout=10_000)
        expect(page.locator("#spans tr[data-kind=step][data-label=reasoning]")).to_have_attribute(
            "data-status", "running"
        )
        ui.shot("task-page-running")
        page.click("#cancel-button")
        expect(page.locator("#cancel-button")).to_have_text("Cancel it and its children?")  # armed: click again
        page.click("#cancel-button")
        expect(page.locator("#task-state")).to_have_text("CANCELLED", timeout=15_000)
        assert ui.state(task_id) == "CANCELLED"
        expect(page.locator("#cancel-button")).to_have_count(0)
        expect(page.locator("#resume-button")).to_be_visible()  # a cancelled workflow can be resumed
        expect(page.locator("#spans tr[data-kind=attempt]").last).to_have_attribute(
            "data-status", "CANCELLED", timeout=10_000
        )
        abandoned = page.locator("#spans tr[data-kind=llm]")  # the call it was waiting on, given up
        expect(abandoned).to_have_attribute("data-status", "failed", timeout=10_000)
        expect(abandoned).to_contain_text("TaskCancelled")
        ui.shot("task-page-cancelled")
        ui.no_policy_errors()


def _history(stack: Stack, count: int = 90) -> None:
    """An hour of earlier work, as the charts of a busy system show it: tasks of three workflows
    (some failed) with their LLM calls, and queue depths sampled every 15 s."""
    rng = random.Random(7)
    now = utcnow()
    rows, calls = [], []
    for n in range(count):
        created = now - timedelta(seconds=rng.uniform(120, 3500))
        workflow = rng.choice(("agent", "agent", "research", "planner"))
        took = rng.lognormvariate(1.2 if workflow == "agent" else 0.4, 0.5)
        state = "FAILURE" if rng.random() < 0.08 else "SUCCESS"
        task_id = str(uuid.uuid4())
        finished = created + timedelta(seconds=took)
        rows.append(
            {
                "id": task_id,
                "workflow": workflow,
                "actor": workflow,
                "queue": "default" if workflow == "agent" else workflow,
                "priority": 0,
                "state": state,
                "progress": 100 if state == "SUCCESS" else 50,
                "current_step": "complete" if state == "SUCCESS" else "synthesis",
                "input": {"query": f"history question {n}", "context": {}},
                "error": "PermanentError: LLM request refused (400): bad request" if state == "FAILURE" else None,
                "attempts": 1,
                "tenant": "default",
                "wake_pending": False,
                "created_at": created,
                "started_at": created + timedelta(seconds=0.05),
                "finished_at": finished,
                "updated_at": finished,
            }
        )
        for call in range(2 if workflow == "agent" else 1):
            calls.append((task_id, created + timedelta(seconds=0.1 + call * took / 2), int(took * 400)))
    with stack.runtime.sessions.begin() as session:
        session.execute(insert(Task), rows)
        for task_id, started, ms in calls:
            prompt, completion = rng.randint(300, 1800), rng.randint(120, 700)
            record_call(
                session,
                task_id=task_id,
                attempt=1,
                step=None,
                kind="llm",
                name="test-model",
                started_at=started,
                duration_ms=ms,
                prompt_tokens=prompt,
                completion_tokens=completion,
            )
        for tick in range(240):
            wave = max(0, int(40 * (1 + rng.uniform(-0.2, 0.2)) * max(0.0, 1 - abs(tick - 150) / 40)))
            depths = [
                {"queue": "default", "ready": wave, "delayed": 0, "dead_letters": 1 if tick > 200 else 0},
                {"queue": "research", "ready": wave // 3, "delayed": 0, "dead_letters": 0},
            ]
            record_samples(session, now - timedelta(seconds=3600 - 15 * tick), depths)


def test_the_overview_charts_the_tasks_the_test_ran_and_filters_and_pages_the_list(
    priced: Settings, fake_llm: FakeOpenAIServer, make_stack: MakeStack, browser: Any, tmp_path: Path
) -> None:
    fake_llm.latency = 0.2
    with dashboard(priced, make_stack, browser, tmp_path) as ui:
        expect = pytest.importorskip("playwright.sync_api").expect
        _history(ui.stack)
        ran = [ui.submit(query=f"Overview run {n}") for n in range(3)]
        fake_llm.fail_next(1, status=400, match="Doomed")
        doomed = ui.submit(query="Doomed from the start")
        for task_id in ran:
            ui.wait_for(task_id, "SUCCESS")
        ui.wait_for(doomed, "FAILURE")
        page = ui.page
        page.goto(f"{ui.base}/#/")
        for name in ("throughput", "durations", "queues", "tokens"):
            # data-total: what the chart adds up to (tasks, seconds, samples, tokens), set once it is drawn
            expect(page.locator(f"#card-{name}")).to_have_attribute("data-total", re.compile(r"^[1-9]"), timeout=15_000)
        throughput = ui.chart("chart-throughput")  # datasets: submitted, succeeded, failed, cancelled
        assert sum(throughput["data"][0][-2:]) >= 4  # the last minutes: the four tasks submitted just now
        assert sum(throughput["data"][2][-2:]) >= 1  # one of them failed
        assert "agent" in ui.chart("chart-durations")["labels"]
        assert "default" in [
            d
            for d in page.evaluate(
                "() => Chart.getChart(document.getElementById('chart-queues')).data.datasets.map(d => d.label)"
            )
        ]
        expect(page.locator("tr.task")).to_have_count(25)  # a page of the list
        ui.shot("overview")

        page.select_option("#f-state", "FAILURE")
        page.fill("#f-q", "Doomed")
        expect(page.locator("tr.task")).to_have_count(1)
        assert page.locator("tr.task").get_attribute("data-task-id") == doomed
        page.fill("#f-q", "")
        page.select_option("#f-state", "SUCCESS")
        page.select_option("#f-workflow", "agent")
        expect(page.locator("tr.task")).to_have_count(25)
        first_page = page.locator("tr.task").evaluate_all("rows => rows.map(r => r.dataset.taskId)")
        assert all(
            s == "SUCCESS" for s in page.locator("tr.task").evaluate_all("rows => rows.map(r => r.dataset.state)")
        )
        assert "state=SUCCESS" in page.url  # the filters are in the address: a filtered list can be shared
        assert "workflow=agent" in page.url
        page.click("#older")
        expect(page.locator("#page-info")).to_have_text("page 2")
        second_page = page.locator("tr.task").evaluate_all("rows => rows.map(r => r.dataset.taskId)")
        assert second_page
        assert not set(first_page) & set(second_page)
        page.click("#newer")
        expect(page.locator("#page-info")).to_have_text("page 1")
        expect(page.locator("tr.task").first).to_have_attribute("data-task-id", first_page[0])
        assert page.locator("tr.task time.rel").first.get_attribute("title")  # the exact time on hover

        page.goto(f"{ui.base}/#/workers")
        expect(page.locator("tr.worker")).to_have_count(1, timeout=15_000)
        expect(page.locator("tr.worker .badge")).to_have_text("alive")
        ui.shot("workers")
        page.goto(f"{ui.base}/#/dead-letters")
        letter = page.locator(f"tr.letter[data-task-id='{doomed}']")  # the task that failed, dead-lettered
        expect(letter).to_be_visible(timeout=15_000)
        ui.shot("dead-letters")
        letter.locator(".replay").click()  # the model answers this time
        expect(letter).to_have_count(0)
        ui.wait_for(doomed, "SUCCESS")
        ui.no_policy_errors()
