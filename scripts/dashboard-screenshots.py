#!/usr/bin/env python3
"""Screenshots of the dashboard's pages for docs/dashboard.md, taken from a real cluster.

Starts a single node (its HTTP listener on a free loopback port) and a worker in a temporary directory,
creates a few example tasks (a fast job with varied run times and the odd failure, a job that succeeds
on its second attempt, one that always fails into the dead-letter queue, a paused one, a nightly cron in
Europe/Paris), lets them run for `--run-for` seconds, then has headless Chromium (Debian's chromium and
chromium-driver: scripts/test-deps.sh) save each page as a PNG in `--out` (default docs/images/):

    cluster.png  tasks.png  task.png  execution.png  dead-letters.png  tasks-phone.png

Usage: .venv/bin/python scripts/dashboard-screenshots.py [--out DIR] [--run-for SECONDS]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cronraft.client import Client, command, cron, every, retry  # noqa: E402
from tests.integration.harness import Cluster, wait_for  # noqa: E402
from tests.support import browser as chromium  # noqa: E402
from tests.support.ports import free_port  # noqa: E402

WIDTH = 1280

# A job whose run time and outcome vary with its execution (deterministic: a hash of the id).
SYNC = """
import hashlib, os, sys, time
h = int(hashlib.sha256(os.environ["CRONRAFT_EXECUTION_ID"].encode()).hexdigest(), 16)
print("syncing inventory from warehouse", h % 7)
for i in range(3):
    print(f"batch {i + 1}/3: {100 + h % 400} rows", flush=True)
    time.sleep(0.1 + (h >> (8 * i)) % 10 / 20)
if h % 9 == 0:
    print("warehouse answered 503", file=sys.stderr); sys.exit(2)
print("done")
"""
# Fails on its first attempt, succeeds on the second.
RETRIED = """
import os, sys, time
attempt = int(os.environ["CRONRAFT_ATTEMPT"])
print(f"export attempt {attempt}: connecting to the report store"); sys.stdout.flush(); time.sleep(0.6)
if attempt == 1:
    print("connection reset by peer", file=sys.stderr); sys.exit(1)
print("exported 1,204 rows to reports/daily.csv")
"""
FAILING = "import sys; print('token expired for the billing API', file=sys.stderr); sys.exit(3)"


def full_page(b: chromium.Browser, path: Path, width: int = WIDTH, *, mobile: bool = False) -> None:
    b.page_screenshot(path, width=width, mobile=mobile, max_height=2400)
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


def settle(b: chromium.Browser, selector: str) -> None:
    b.one(selector, timeout_s=30)
    time.sleep(0.8)  # the page's other sections load in parallel


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    parser.add_argument("--run-for", type=float, default=75.0, help="seconds of runs before the pictures")
    args = parser.parse_args()
    problem = chromium.missing()
    if problem:
        print(f"dashboard-screenshots: {problem}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cronraft-shots-") as tmp:
        port = free_port()
        c = Cluster(Path(tmp), n=1, extra_toml=f'[http]\naddress = "127.0.0.1:{port}"\n')
        try:
            c.start()
            c.start_worker("worker-1", capacity=4)
            c.start_worker("worker-2", capacity=2, extra_args=("--label", "zone=b"))
            c.wait_workers(2)
            url = f"http://127.0.0.1:{port}"
            wait_for(lambda: urllib.request.urlopen(f"{url}/healthz", timeout=2).status == 200, 20, "HTTP")
            client = Client(c.servers, timeout_s=10)
            py = sys.executable
            sync = client.create_task(
                "sync-inventory", every("5s"), command(py, "-c", SYNC), tags={"team": "data", "env": "prod"}
            )
            client.create_task(
                "export-daily-report",
                every("20s"),
                command(py, "-c", RETRIED),
                tags={"team": "data"},
                max_attempts=3,
                retry=retry("1s"),
            )
            client.create_task(
                "bill-customers", every("30s"), command(py, "-c", FAILING), tags={"team": "billing"},
                max_attempts=2, retry=retry("1s"),
            )  # fmt: skip
            client.create_task(
                "nightly-backup", cron("30 2 * * *", "Europe/Paris"), command("true"), tags={"team": "ops"}
            )
            legacy = client.create_task("legacy-import", every("1h"), command("true"), tags={"team": "data"})
            client.pause_task(legacy.task_id, note="replaced by sync-inventory")
            print(f"running the example tasks for {args.run_for:.0f} s ...")
            time.sleep(args.run_for)

            retried = next(
                e
                for e in client.list_executions(next(client.list_tasks(name_prefix="export-daily")).task_id)
                if e.attempt >= 2 and e.finished_at_ms
            )
            b = chromium.Browser(width=WIDTH, height=900)
            try:
                b.emulate(WIDTH, 900)  # the pages lay out at this width before they draw their charts
                b.get(f"{url}/#/cluster")
                settle(b, "main table")
                full_page(b, args.out / "cluster.png")
                b.get(f"{url}/#/tasks")
                settle(b, "#tasks-area table")
                full_page(b, args.out / "tasks.png")
                b.get(f"{url}/#/task/{sync.task_id}")
                settle(b, "svg.duration-chart")
                full_page(b, args.out / "task.png")
                b.get(f"{url}/#/execution/{retried.execution_id}")
                settle(b, "svg.timeline")
                full_page(b, args.out / "execution.png")
                b.get(f"{url}/#/dead-letters")
                settle(b, "#dl-area table")
                full_page(b, args.out / "dead-letters.png")
                b.emulate(390, 844, mobile=True)
                b.get(f"{url}/#/tasks")
                settle(b, "#tasks-area table")
                full_page(b, args.out / "tasks-phone.png", width=390, mobile=True)
            finally:
                b.close()
        finally:
            c.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
