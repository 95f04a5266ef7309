"""The web dashboard in a real browser (issue 15): headless Chromium, driven by Selenium, against a real
single-node cluster (schedd and schedworker as processes) whose HTTP listener serves the dashboard.

- authentication off: the tasks page renders tasks created through the API; the name, tag and state
  filters narrow the list; pausing a task in the page shows as paused in `schedctl task get`; a trigger
  from the page runs on the worker and its execution page shows the output; a running execution's output
  shows before it ends; a dead letter is redriven and the queue purged from the page; the cluster page
  shows the member and the worker.
- authentication on (a token file): the page asks for a token and the API refuses without one; an
  unknown token is refused; a reader's token lists tasks but its pause is refused (403 shown, naming the
  role); an operator's pause works.

Skipped with the reason when Chromium, its driver or selenium is missing (scripts/test-deps.sh)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cronraft.client import Client, command, cron, retry
from cronraft.client._transport import Transport
from cronraft.proto.v1 import common_pb2
from cronraft.tokenfile import add_token
from tests.support import browser as chromium
from tests.support.ports import free_port

from .harness import Cluster, wait_for
from .test_security_transport import SecureCluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(chromium.missing() is not None, reason=str(chromium.missing())),
]


# Prints a line every half second for six seconds: the execution page shows the first before the last.
SLOW = (
    "import time\nfor i in range(12):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.5)\nprint('done')"
)


@pytest.fixture
def browser() -> Iterator[chromium.Browser]:
    b = chromium.Browser()
    try:
        yield b
    finally:
        b.close()


def start(
    tmp_path: Path, clusters: list[Cluster], auth_toml: str = "", admin_token: str | None = None
) -> tuple[Cluster, str]:
    """A single node with its HTTP listener on a free port; the dashboard's URL. With `auth_toml`, the
    harness finds the leader with `admin_token`."""
    port = free_port()
    c = SecureCluster(tmp_path, n=1, extra_toml=f'[http]\naddress = "127.0.0.1:{port}"\n\n{auth_toml}')
    c.admin = Transport(token=admin_token)
    clusters.append(c)
    c.start()
    url = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: urllib.request.urlopen(f"{url}/healthz", timeout=2).status == 200, 20, "the HTTP listener"
    )
    return c, url


def schedctl(c: Cluster, *argv: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    auth = ("--token", token) if token else ()
    return subprocess.run(
        [sys.executable, "-m", "cronraft.client.cli", "--server", c.servers, *auth, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=c.env,
    )


def names(b: chromium.Browser) -> list[str]:
    return [e.text for e in b.css("#tasks-area a.task-name")]


def test_tasks_filters_actions_live_output_and_dead_letters_without_auth(
    tmp_path: Path, clusters: list[Cluster], browser: chromium.Browser
) -> None:
    c, url = start(tmp_path, clusters)
    c.start_worker("w1")
    client = Client(c.servers, timeout_s=10)
    hello = command(sys.executable, "-c", "print('hello from the dashboard')")
    alpha = client.create_task("dash-alpha", cron("0 3 * * *", "Europe/Paris"), hello, tags={"team": "data"})
    client.create_task("dash-beta", cron("*/5 * * * *"), hello, tags={"team": "web"})
    client.create_task("other", cron("0 0 1 1 *"), hello)
    slow = client.create_task("slow-printer", cron("0 0 1 1 *"), command(sys.executable, "-c", SLOW))
    exit_3 = command(sys.executable, "-c", "import sys; sys.exit(3)")
    failing = client.create_task("failing-job", cron("0 0 1 1 *"), exit_3, max_attempts=1, retry=retry("1s"))
    c.wait_workers(1)

    browser.get(f"{url}/#/tasks")
    every_task = {"dash-alpha", "dash-beta", "other", "slow-printer", "failing-job"}
    browser.wait(lambda: set(names(browser)) == every_task, "the tasks")
    assert browser.console_errors() == []

    browser.fill("#f-name", "dash-")
    browser.click("#f-apply")
    browser.wait(lambda: sorted(names(browser)) == ["dash-alpha", "dash-beta"], "the name filter")
    assert "q=dash-" in browser.driver.current_url  # a filtered list is a link
    browser.fill("#f-tag", "team=web")
    browser.click("#f-apply")
    browser.wait(lambda: names(browser) == ["dash-beta"], "the tag filter")
    browser.fill("#f-tag", "")
    browser.driver.find_element("css selector", "#f-state option[value=paused]").click()
    browser.click("#f-apply")
    browser.wait_text("#tasks-area", "No task matches")

    # Pause dash-alpha from its page: schedctl sees it paused.
    browser.get(f"{url}/#/task/{alpha.task_id}")
    # Its next fires, in the schedule's zone (Europe/Paris: +01:00 or +02:00).
    browser.wait(lambda: len(browser.css("#task-preview tbody tr")) == 10, "ten next fires")
    assert "+0" in browser.text("#task-preview")
    browser.click("#act-pause")
    browser.confirm()
    browser.wait_text("#task-state", "paused")
    got = schedctl(c, "task", "get", alpha.task_id, "-o", "json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["state"] == "paused"

    # Trigger it: the worker runs it, and the execution page shows its output.
    browser.click("#act-trigger")
    browser.confirm()
    browser.click("#messages a")
    browser.wait_text("#execution-state", "succeeded", timeout_s=30)
    browser.wait_text("#stdout", "hello from the dashboard")
    assert browser.css("#execution-attempts svg.timeline")

    # A running execution's output is followed live: lines show before it ends.
    running = client.trigger_task(slow.task_id)
    browser.get(f"{url}/#/execution/{running.execution_id}")
    browser.wait(lambda: "tick" in (t := browser.text("#stdout")) and "done" not in t, "output while it runs")
    browser.wait_text("#stdout", "done", timeout_s=30)
    browser.wait_text("#execution-state", "succeeded")

    # Dead letters: redrive one, then purge the namespace's, each confirmed.
    for _ in range(2):
        client.trigger_task(failing.task_id)
    wait_for(lambda: len(list(client.list_dead_letters())) == 2, 30, "two dead letters")
    browser.get(f"{url}/#/dead-letters")
    browser.wait(lambda: len(browser.css("#dl-area .dl-pick")) == 2, "the two dead letters")
    browser.css("#dl-area .dl-pick")[0].click()
    browser.click("#dl-redrive")
    browser.confirm()
    browser.wait_text("#messages", "Redriven: 1 new execution")
    browser.click("#dl-purge-all")
    browser.confirm()
    browser.wait_text("#messages", "Purged")

    # Search: the tasks whose last run failed; failed executions across tasks. Two failures that are
    # certainly there (the purge took the dead letters' executions, and the redriven one may have gone
    # with them or not), ended before the page asks (it does not refresh by itself).
    for _ in range(2):
        client.trigger_task(failing.task_id)

    def failed_twice() -> bool:
        failed = [
            e for e in client.list_executions(failing.task_id) if e.state == common_pb2.EXECUTION_FAILED
        ]
        return len(failed) >= 2

    wait_for(failed_twice, 30, "two failed executions of failing-job")
    browser.get(f"{url}/#/tasks?last=failed")
    browser.wait(lambda: names(browser) == ["failing-job"], "the tasks whose last run failed")
    browser.get(f"{url}/#/executions?state=failures")

    seen: list[str] = []

    def failed_rows() -> bool:
        seen[:] = [r.text for r in browser.css("#executions-area tbody tr")]
        # Every row in a failure state (the filter is failed, timed out, lost or expired: on a loaded
        # machine a lease of failing-job's can be lost, its attempts exhausted), the two failures among them.
        failure = ("failed", "timed out", "timed_out", "lost", "expired")
        return sum("failed" in r for r in seen) >= 2 and all(any(f in r for f in failure) for r in seen)

    try:
        browser.wait(failed_rows, "the failed executions")
    except AssertionError as e:
        raise AssertionError(f"{e}; the rows: {seen}") from None

    browser.get(f"{url}/#/cluster")
    browser.wait_text("main", "w1")
    assert "node1" in browser.text("main") and "leader" in browser.text("main")
    assert browser.console_errors() == []


def test_token_login_and_roles(tmp_path: Path, clusters: list[Cluster], browser: chromium.Browser) -> None:
    tokens_file = tmp_path / "tokens.toml"
    now_ms = int(time.time() * 1000)
    tokens = {
        name: add_token(tokens_file, name, roles, now_ms=now_ms)
        for name, roles in (("rita", ["reader"]), ("ops", ["operator"]), ("admin", ["admin"]))
    }
    c, url = start(tmp_path, clusters, f'[auth]\ntoken_file = "{tokens_file}"\n', tokens["admin"])
    client = Client(c.servers, timeout_s=10, transport=Transport(token=tokens["ops"]))
    task = client.create_task("guarded", cron("0 4 * * *"), command("true"))

    # No token: the API refuses, the page asks for one.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{url}/api/v1/tasks", timeout=5)
    assert refused.value.code == 401
    browser.get(f"{url}/#/tasks")
    browser.one("#login #token")
    assert not browser.css("#tasks-area")

    browser.fill("#token", "crt1_not-a-token")
    browser.click("#login button[type=submit]")
    browser.wait_text("#login .banner", "not known")

    # A reader signs in: the list shows, a pause is refused with the role it needs.
    browser.fill("#token", tokens["rita"])
    browser.click("#login button[type=submit]")
    browser.wait(lambda: names(browser) == ["guarded"], "the reader's task list")
    assert "rita" in browser.text("#who")
    browser.get(f"{url}/#/task/{task.task_id}")
    browser.click("#act-pause")
    browser.confirm()
    banner = browser.wait_text("#messages", "Permission denied")
    assert "PauseTask needs role submitter" in banner
    assert browser.one("#messages .banner").get_attribute("data-status") == "403"
    assert schedctl(c, "task", "get", task.task_id, "-o", "json", token=tokens["ops"]).stdout.count(
        '"scheduled"'
    )

    # Sign out; an operator's pause goes through.
    browser.click("#who .logout")
    browser.fill("#token", tokens["ops"])
    browser.click("#login button[type=submit]")
    browser.wait_text("#who", "ops")
    browser.get(f"{url}/#/task/{task.task_id}")
    browser.click("#act-pause")
    browser.confirm()
    browser.wait_text("#task-state", "paused")
    got = schedctl(c, "task", "get", task.task_id, "-o", "json", token=tokens["ops"])
    assert json.loads(got.stdout)["state"] == "paused"
    assert browser.console_errors() == []
