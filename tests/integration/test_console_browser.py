"""The console in a real browser: Debian's chromium, headless, driven by Selenium, against
`taskstream serve` with a real worker and materializer on the test broker.

Without chromium and its driver (apt-get install chromium chromium-driver; scripts/test does
it when run as root) the test skips with the reason, and fails with CI=true. With
TASKSTREAM_CONSOLE_SCREENSHOTS=DIR it saves the pages it visits there as PNGs (the guide's
screenshots, docs/console-*.png: DIR=docs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from taskstream import App
from taskstream.kafka.topics import dead_letter_topic
from tests.conftest import REPO, Scope
from tests.integration.console_app import build_app
from tests.integration.http_server import serve_process
from tests.integration.running import read_topic

pytestmark = pytest.mark.integration

APP_SPEC = "tests.integration.console_app:app"
WAIT_S = 60  # for anything the page shows after the worker or a live refresh


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        driver = None
    if chromium is None or driver is None:
        reason = (
            "needs chromium, chromium-driver (apt-get install chromium chromium-driver) "
            "and selenium (the test extra)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"the console's browser test {reason}: scripts/test installs them")
        pytest.skip(f"the console's browser test {reason}")
    return chromium, driver


class Browser:
    """A headless chromium page, with waits that poll what the page shows."""

    def __init__(self, chromium: str, driver: str, shots: Path | None) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = chromium  # the system's: nothing is downloaded
        for argument in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1400,1000",
            "--hide-scrollbars",
        ):
            options.add_argument(argument)
        self.driver = webdriver.Chrome(options=options, service=Service(executable_path=driver))
        self.driver.set_page_load_timeout(WAIT_S)
        self.shots = shots

    def open(self, url: str) -> None:
        self.driver.get(url)

    def text(self) -> str:
        body: str = self.driver.find_element("tag name", "body").text
        return body

    def css(self, selector: str) -> Any:
        return self.driver.find_element("css selector", selector)

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        def check(_driver: object) -> bool:
            try:
                return condition()
            except WebDriverException:  # an element replaced by a live refresh meanwhile
                return False

        WebDriverWait(self.driver, WAIT_S, poll_frequency=0.2).until(check, f"waiting for {what}")

    def shoot(self, name: str) -> None:
        if self.shots is not None:
            self.shots.mkdir(parents=True, exist_ok=True)
            self.driver.save_screenshot(str(self.shots / f"console-{name}.png"))

    def close(self) -> None:
        self.driver.quit()


@contextmanager
def hostile_page(html: str) -> Iterator[str]:
    """`html` served at / by a server of its own on another loopback port: another origin."""
    body = f"<!doctype html><html><body>{html}</body></html>".encode()

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def browser() -> Iterator[Browser]:
    chromium, driver = _browser_paths()
    shots = os.environ.get("TASKSTREAM_CONSOLE_SCREENSHOTS")
    b = Browser(chromium, driver, (REPO / shots) if shots else None)
    try:
        yield b
    finally:
        b.close()


def _spawn(scope: Scope, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "taskstream.cli", *args], env=scope.env(), cwd=REPO
    )


@pytest.fixture
def deployment(scope: Scope) -> Iterator[tuple[App, str]]:
    """A worker and a materializer process, and `taskstream serve` with its console."""
    app = build_app(**scope.settings())
    app.ensure_topics()
    processes = [
        _spawn(scope, "worker", APP_SPEC, "--concurrency", "2"),
        _spawn(scope, "materialize", "--app", APP_SPEC),
    ]
    try:
        with serve_process(scope, APP_SPEC) as url:
            yield app, url
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        app.close()


def test_the_console_shows_real_tasks_finds_one_and_replays_a_dead_letter(
    browser: Browser, deployment: tuple[App, str], scope: Scope, tmp_path: Path
) -> None:
    app, url = deployment
    marker = tmp_path / "fixed.txt"
    added = app.tasks["itest.add"].apply_async((2, 3), key="customer-42")
    for i in range(20):
        app.tasks["itest.add"].delay(i, i)
    failed = app.tasks["itest.fail"].delay("card declined")
    fragile = app.tasks["itest.console.fragile"].delay(str(marker))
    waiting = app.tasks["itest.add"].apply_async((7, 8), countdown=900)
    assert added.get(timeout=WAIT_S) == 5
    read_topic(scope, dead_letter_topic(scope.topic_prefix), 1, timeout=WAIT_S)
    assert fragile.status == "FAILURE" and failed.status == "FAILURE"

    # The overview: outcomes from the store, the queues' lag; live without reloading.
    browser.open(f"{url}/ui")
    browser.wait_for(lambda: "succeeded" in browser.css("#throughput-summary").text, "outcomes")
    assert "default" in browser.css("#queues").text
    browser.driver.execute_script("window.notReloaded = true;")
    before = browser.css("#throughput-summary").text
    more = [app.tasks["itest.add"].delay(1, i) for i in range(5)]
    assert [r.get(timeout=WAIT_S) for r in more] == [1, 2, 3, 4, 5]
    browser.wait_for(lambda: browser.css("#throughput-summary").text != before, "a live refresh")
    assert browser.driver.execute_script("return window.notReloaded === true;")
    browser.shoot("overview")

    # Tasks: search a known id, open it: arguments, result, times.
    browser.open(f"{url}/ui/tasks")
    browser.wait_for(lambda: "itest.add" in browser.css("#tasks").text, "the task list")
    browser.shoot("tasks")
    browser.css("#search-id").send_keys(added.id)
    browser.css("#search").click()
    browser.wait_for(lambda: added.id in browser.css("#tasks").text, "the search result")
    browser.css(f'#tasks a[href="/ui/tasks/{added.id}"]').click()
    browser.wait_for(lambda: "Result" in browser.text(), "the task page")
    page = browser.text()
    assert added.id in page and "SUCCESS" in page and "customer-42" in page
    assert '"a": 2' in browser.css("pre.json").text
    browser.shoot("task")

    # A failure shows its error and traceback.
    browser.open(f"{url}/ui/tasks/{failed.id}")
    browser.wait_for(lambda: "card declined" in browser.text(), "the error")
    assert "Traceback" in browser.css("pre.traceback").text

    # Delay tiers: the task sent with a 15-minute countdown waits in the 600 s tier.
    browser.open(f"{url}/ui/delays")
    browser.wait_for(lambda: waiting.id in browser.css("#delays").text, "the waiting task")
    browser.shoot("delays")

    # Dead letters: replay one, confirmed, once its cause is fixed; its task succeeds.
    browser.open(f"{url}/ui/dead-letters")
    browser.wait_for(lambda: fragile.id in browser.css("#letters").text, "the dead letter")
    assert "retries-exhausted" in browser.css("#letters").text
    browser.shoot("dead-letters")
    marker.write_text("fixed")
    row = browser.css(f'#letters a[href="/ui/tasks/{fragile.id}"]').find_element("xpath", "../..")
    position = row.find_element("css selector", 'input[name="letter"]').get_attribute("value")

    # A page of another origin (another port of the same host: the same site) that posts the
    # confirmed replay and a revoke as soon as it loads: the server refuses both (issue 26).
    for action, fields in [
        ("/ui/dead-letters/replay", {"letters": position, "confirm": "yes"}),
        (f"/v1/tasks/{waiting.id}:revoke", {}),
    ]:
        inputs = "".join(f'<input name="{k}" value="{v}">' for k, v in fields.items())
        form = f'<form id="f" method="post" action="{url}{action}">{inputs}</form>'
        with hostile_page(form + '<script>document.getElementById("f").submit()</script>') as evil:
            browser.open(evil)
            browser.wait_for(lambda: "cross_origin" in browser.text(), "the refusal")
        assert "Replayed" not in browser.text() and '"revoked"' not in browser.text()
    assert fragile.status == "FAILURE" and waiting.status == "PENDING"

    browser.open(f"{url}/ui/dead-letters")
    browser.wait_for(lambda: fragile.id in browser.css("#letters").text, "the dead letter")
    row = browser.css(f'#letters a[href="/ui/tasks/{fragile.id}"]').find_element("xpath", "../..")
    row.find_element("css selector", "button").click()
    browser.wait_for(lambda: "Replay dead letters?" in browser.text(), "the confirmation")
    assert fragile.status == "FAILURE"  # nothing sent before the confirmation
    browser.css("#confirm-replay").click()
    browser.wait_for(lambda: "Replayed 1 dead letters." in browser.text(), "the replay")
    browser.css(f'a[href="/ui/tasks/{fragile.id}"]').click()
    browser.wait_for(lambda: "SUCCESS" in browser.css("#live").text, "the replayed task's success")
    assert fragile.get(timeout=WAIT_S) == "fixed"
