"""`launcher web` in a real browser: Debian's headless Chromium, a real run, the real CLI.

The agent prints a line, waits for a file in its worktree that only `launcher exec` writes,
then prints a second line: the page loaded before that must show the second line arrive
(server-sent events) without a reload. Screenshots are kept as artifacts; the assertions
are on the DOM, read through the DevTools protocol (tests/web/cdpkit.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runs"))

from cdpkit import Browser, chromium_binary
from runkit import Case, agent_image, case, launcher_roots, make_repo, wait_for

__all__ = ["agent_image", "case", "launcher_roots"]

pytestmark = [pytest.mark.docker, pytest.mark.slow]

AGENT = (
    'echo "first line <script>window.owned = 1</script>"; '
    "while [ ! -f go.txt ]; do sleep 0.1; done; "
    'echo "second line after $(cat go.txt)"'
)


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    top = Path(os.environ.get("LAUNCHER_TEST_ARTIFACTS") or "/tmp/launcher-web-artifacts")
    where = top / request.node.name
    where.mkdir(parents=True, exist_ok=True)
    print(f"screenshots of {request.node.name}: {where}")
    return where


@pytest.fixture
def browser() -> Iterator[Browser]:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("this machine has no Chromium (Debian: apt-get install chromium)")
    opened = Browser(binary)
    try:
        yield opened
    finally:
        opened.close()


def serve(case: Case, tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    errors = (tmp_path / "web.stderr").open("wb")
    web = case.popen("web", stdout=subprocess.PIPE, stderr=errors)
    assert web.stdout is not None
    url = web.stdout.readline().decode().strip()
    assert url.startswith("http://127.0.0.1:"), f"{url!r}\n{(tmp_path / 'web.stderr').read_text()}"
    return web, url


def text_of(browser: Browser, selector: str) -> str:
    return str(browser.evaluate(f"(document.querySelector({selector!r}) || {{}}).textContent || ''"))


def test_the_page_lists_live_runs_and_streams_a_run_s_log_as_the_agent_prints(
    case: Case, tmp_path: Path, browser: Browser, artifacts: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    task = case.create_task(repo, "Stream me <b>bold</b>")
    other_task = case.create_task(repo, "Stay alive")
    agent = case.popen("run", task, "--", "sh", "-c", AGENT)
    other = case.popen("run", other_task, "--", "sh", "-c", "while [ ! -f go.txt ]; do sleep 0.1; done")
    run_id, other_id = case.wait_running(task), case.wait_running(other_task)
    web, url = serve(case, tmp_path)
    try:
        browser.navigate(url)
        wait_for(lambda: run_id in text_of(browser, "#runs tbody"), timeout=60, what="the run in the run list")
        rows = browser.evaluate(
            "[...document.querySelectorAll('#runs tbody tr')].map(r => [...r.cells].map(c => c.textContent))"
        )
        assert sorted((row[0], row[2]) for row in rows) == sorted([(run_id, "running"), (other_id, "running")])
        browser.screenshot(artifacts / "1-run-list.png")

        browser.navigate(f"{url}runs/{run_id}")
        wait_for(lambda: "first line" in text_of(browser, "#log"), timeout=60, what="the first line in the page")
        wait_for(lambda: text_of(browser, "#log-state") == "following", timeout=30, what="the log stream to open")
        browser.evaluate("window.samePage = 'yes'")  # gone if the page reloads
        assert "second line" not in text_of(browser, "#log")
        browser.screenshot(artifacts / "2-log-before-go.png")

        case.ok("exec", run_id, "--", "sh", "-c", "echo go > go.txt")
        wait_for(
            lambda: "second line after go" in text_of(browser, "#log"), timeout=60, what="the second line streamed in"
        )
        assert browser.evaluate("window.samePage") == "yes"
        browser.screenshot(artifacts / "3-log-after-go.png")
        assert agent.wait(timeout=120) == 0
        wait_for(
            lambda: text_of(browser, "#log-state") == "run ended: exited", timeout=60, what="the stream's end event"
        )

        log = text_of(browser, "#log")
        assert "first line <script>window.owned = 1</script>" in log  # shown as text…
        assert browser.evaluate("typeof window.owned") == "undefined"  # …never run
        assert browser.evaluate("document.querySelectorAll('script').length") == 1
        assert log.count("first line") == 1  # the stream went on from where the page stopped
        browser.screenshot(artifacts / "4-run-ended.png")

        case.ok("exec", other_id, "--", "sh", "-c", "echo go > go.txt")
        assert other.wait(timeout=120) == 0
        browser.navigate(url)
        assert browser.evaluate("document.querySelectorAll('#runs tbody tr').length") == 0  # no live run left
        assert text_of(browser, "#no-runs") == "no live runs match"
        browser.navigate(url + "?all=1")
        links = browser.evaluate("[...document.querySelectorAll('#runs tbody a')].map(a => a.textContent)")
        assert {run_id, other_id} <= set(links)
        browser.screenshot(artifacts / "5-all-runs.png")
    finally:
        web.terminate()
        web.wait(timeout=30)
    assert sorted(p.name for p in artifacts.glob("*.png")) == [
        "1-run-list.png",
        "2-log-before-go.png",
        "3-log-after-go.png",
        "4-run-ended.png",
        "5-all-runs.png",
    ]
