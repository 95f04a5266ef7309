"""Notifications: the pure body and target selection, then delivery through a real loopback HTTP server,
a real command, and a scripted fake `Sender` (retries, give-up, drops, close).

Synchronisation is by events, queues and `Notifier.join()`; backoff waits go through an injected `sleep`
that records them and returns at once. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog

from cronraft.daemon.notify import (
    Notification,
    Notifier,
    delivery_id,
    describe_target,
    encode_body,
    notification_body,
    targets_for,
    validate_targets,
)
from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2
from cronraft.raft.validate import host_allowed
from tests.support.ports import free_port

WAIT_S = 10.0
NOW_MS = 1_750_000_000_123
NOMINAL_MS = 1_750_000_000_000


class FixedClock:
    def now_ms(self) -> int:
        return NOW_MS

    def mono_ms(self) -> int:
        return 0


class Sleeps:
    """An injected `sleep` that records the backoff waits and does not wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


# The hosts the tests' task webhooks name: a node delivers a task's own webhook only to a host in its
# [notify] webhook_hosts (issue 13).
HOSTS = ("127.0.0.1", "*.example")


def webhook(url: str, *events: int) -> common_pb2.NotifyTarget:
    return common_pb2.NotifyTarget(
        webhook_url=url, events=[common_pb2.NotifyEvent.ValueType(e) for e in events]
    )


def command_target(argv: Sequence[str], *events: int, cwd: str = "") -> common_pb2.NotifyTarget:
    return common_pb2.NotifyTarget(
        command=common_pb2.CommandPayload(argv=list(argv), cwd=cwd),
        events=[common_pb2.NotifyEvent.ValueType(e) for e in events],
    )


def make_task(*targets: common_pb2.NotifyTarget) -> common_pb2.Task:
    spec = common_pb2.TaskSpec(name="nightly-report", tags={"team": "ops", "env": "prod"})
    spec.notify.extend(targets)
    return common_pb2.Task(task_id="t0001", spec=spec, state=common_pb2.TASK_SCHEDULED)


def make_execution(**kw: Any) -> common_pb2.Execution:
    fields: dict[str, Any] = {
        "execution_id": "e0001",
        "task_id": "t0001",
        "nominal_time_ms": NOMINAL_MS,
        "fired_at_ms": NOMINAL_MS + 5,
        "state": common_pb2.EXECUTION_FAILED,
        "attempt": 3,
        "worker_id": "w1",
        "exit_code": 2,
        "error": "",
        "started_at_ms": NOMINAL_MS + 10,
        "finished_at_ms": NOMINAL_MS + 510,
        "completed_at_ms": NOMINAL_MS + 520,
        "stdout_tail": b"partial output\n",
        "stderr_tail": b"boom\n",
    }
    fields.update(kw)
    return common_pb2.Execution(**fields)


def failure(task: common_pb2.Task | None = None, execution_id: str = "e0001") -> Notification:
    return Notification(
        event=common_pb2.NOTIFY_FAILURE,
        task=task or make_task(webhook("http://127.0.0.1:9/hook")),
        execution=make_execution(execution_id=execution_id),
        cluster="prod-eu",
    )


# ------------------------------------------------------------------------------------------ pure body


def test_failure_body_is_the_documented_object() -> None:
    body = notification_body(failure(), now_ms=NOW_MS)
    assert body == {
        "version": 1,
        "delivery_id": delivery_id(failure()),
        "event": "failure",
        "cluster": "prod-eu",
        "sent_at_ms": NOW_MS,
        "sent_at": "2025-06-15T15:06:40.123Z",
        "task": {"task_id": "t0001", "name": "nightly-report", "tags": {"env": "prod", "team": "ops"}},
        "execution": {
            "execution_id": "e0001",
            "nominal_time_ms": NOMINAL_MS,
            "nominal_time": "2025-06-15T15:06:40.000Z",
            "state": "failed",
            "attempt": 3,
            "worker_id": "w1",
            "exit_code": 2,
            "error": "",
            "manual": False,
            "fired_at_ms": NOMINAL_MS + 5,
            "fired_at": "2025-06-15T15:06:40.005Z",
            "started_at_ms": NOMINAL_MS + 10,
            "started_at": "2025-06-15T15:06:40.010Z",
            "finished_at_ms": NOMINAL_MS + 510,
            "finished_at": "2025-06-15T15:06:40.510Z",
            "completed_at_ms": NOMINAL_MS + 520,
            "completed_at": "2025-06-15T15:06:40.520Z",
            "stdout_tail": "partial output\n",
            "stderr_tail": "boom\n",
        },
        "missed_count": 0,
        "missed": [],
        "dead_letter": None,
    }
    assert list(body["task"]["tags"]) == ["env", "team"]  # sorted keys
    assert json.loads(encode_body(body)) == body


def test_body_event_names_and_unset_times() -> None:
    names = {
        common_pb2.NOTIFY_FAILURE: "failure",
        common_pb2.NOTIFY_TIMEOUT: "timeout",
        common_pb2.NOTIFY_DEAD_LETTER: "dead_letter",
        common_pb2.NOTIFY_MISSED: "missed",
        99: "unknown_99",
    }
    for event, name in names.items():
        n = Notification(event=event, task=make_task(), execution=make_execution(started_at_ms=0))
        body = notification_body(n, now_ms=NOW_MS)
        assert body["event"] == name
        assert body["execution"]["started_at_ms"] == 0
        assert body["execution"]["started_at"] is None
    timed_out = make_execution(state=common_pb2.EXECUTION_TIMED_OUT)
    n = Notification(event=common_pb2.NOTIFY_TIMEOUT, task=make_task(), execution=timed_out)
    assert notification_body(n, now_ms=NOW_MS)["execution"]["state"] == "timed_out"


def test_tails_are_capped_to_4_kib_of_text_without_a_split_character() -> None:
    # 'é' is two bytes: cutting 4096 bytes from the end of this would start inside one.
    tail = b"x" + "é".encode() * 3000
    body = notification_body(
        Notification(
            event=common_pb2.NOTIFY_FAILURE, task=make_task(), execution=make_execution(stdout_tail=tail)
        ),
        now_ms=NOW_MS,
    )
    text = body["execution"]["stdout_tail"]
    assert len(text.encode()) <= 4096
    assert text == "é" * (len(text))  # no U+FFFD from a cut sequence
    assert len(text) == 2048
    bad = make_execution(stderr_tail=b"ok \xff\xfe end")
    n = Notification(event=common_pb2.NOTIFY_FAILURE, task=make_task(), execution=bad)
    assert notification_body(n, now_ms=NOW_MS)["execution"]["stderr_tail"] == "ok \ufffd\ufffd end"


def test_missed_body_lists_nominal_times_sorted_and_capped() -> None:
    records = tuple(
        common_pb2.FireRecord(
            task_id="t0001",
            nominal_time_ms=NOMINAL_MS + 60_000 * i,
            outcome=common_pb2.MISSED_DOWNTIME,
            reason="misfire skip",
        )
        for i in reversed(range(150))
    )
    n = Notification(event=common_pb2.NOTIFY_MISSED, task=make_task(), records=records)
    body = notification_body(n, now_ms=NOW_MS)
    assert body["execution"] is None
    assert body["missed_count"] == 150
    assert len(body["missed"]) == 100
    assert body["missed"][0] == {
        "nominal_time_ms": NOMINAL_MS,
        "nominal_time": "2025-06-15T15:06:40.000Z",
        "reason": "misfire skip",
    }
    assert body["missed"][1]["nominal_time_ms"] == NOMINAL_MS + 60_000


def test_dead_letter_body() -> None:
    dl = common_pb2.DeadLetter(
        execution_id="e0001",
        task_id="t0001",
        task_name="nightly-report",
        reason="attempts exhausted (exit code 2)",
        attempts=3,
        dead_at_ms=NOMINAL_MS + 1000,
        stdout_tail=b"out",
        stderr_tail=b"err",
        nominal_time_ms=NOMINAL_MS,
    )
    n = Notification(
        event=common_pb2.NOTIFY_DEAD_LETTER, task=make_task(), execution=make_execution(), dead_letter=dl
    )
    assert notification_body(n, now_ms=NOW_MS)["dead_letter"] == {
        "execution_id": "e0001",
        "nominal_time_ms": NOMINAL_MS,
        "nominal_time": "2025-06-15T15:06:40.000Z",
        "reason": "attempts exhausted (exit code 2)",
        "attempts": 3,
        "dead_at_ms": NOMINAL_MS + 1000,
        "dead_at": "2025-06-15T15:06:41.000Z",
        "stdout_tail": "out",
        "stderr_tail": "err",
    }


def test_delivery_id_is_stable_per_event_and_distinct_across_events() -> None:
    assert delivery_id(failure()) == delivery_id(failure())
    assert delivery_id(failure()) != delivery_id(failure(execution_id="e0002"))
    timeout = Notification(event=common_pb2.NOTIFY_TIMEOUT, task=make_task(), execution=make_execution())
    assert delivery_id(failure()) != delivery_id(timeout)
    assert len(delivery_id(failure())) == 32


# ------------------------------------------------------------------------------------ target selection


def test_targets_for_filters_by_event_and_appends_global_targets() -> None:
    all_events = webhook("https://a.example/hook")
    only_dl = webhook("https://b.example/hook", common_pb2.NOTIFY_DEAD_LETTER)
    cmd = command_target(["/usr/bin/logger"], common_pb2.NOTIFY_FAILURE, common_pb2.NOTIFY_TIMEOUT)
    task = make_task(all_events, only_dl, cmd)
    glob_missed = webhook("https://ops.example/all", common_pb2.NOTIFY_MISSED)
    glob_all = webhook("https://ops.example/pager")

    skipped: list[str] = []
    # The task's notify command (stored before issue 13) is never run: skipped, with the reason.
    assert targets_for(
        task, common_pb2.NOTIFY_FAILURE, [glob_missed, glob_all], webhook_hosts=HOSTS, skipped=skipped
    ) == [all_events, glob_all]
    assert len(skipped) == 1 and "never run" in skipped[0]
    hosts = {"webhook_hosts": HOSTS}
    assert targets_for(task, common_pb2.NOTIFY_DEAD_LETTER, [glob_missed], **hosts) == [all_events, only_dl]
    assert targets_for(task, common_pb2.NOTIFY_MISSED, [glob_missed], **hosts) == [all_events, glob_missed]
    assert targets_for(make_task(), common_pb2.NOTIFY_FAILURE, [], **hosts) == []


def test_a_task_names_a_configured_notifier_and_keeps_its_own_event_filter() -> None:
    page = command_target(["/usr/local/bin/page"])
    named = common_pb2.NotifyTarget(notifier="page", events=[common_pb2.NOTIFY_TIMEOUT])
    gone = common_pb2.NotifyTarget(notifier="removed-since")
    task = make_task(named, gone, webhook("https://not-allowed.example.org/x"))
    skipped: list[str] = []
    got = targets_for(
        task, common_pb2.NOTIFY_TIMEOUT, [], notifiers={"page": page}, webhook_hosts=(), skipped=skipped
    )
    assert got == [command_target(["/usr/local/bin/page"], common_pb2.NOTIFY_TIMEOUT)]
    assert targets_for(task, common_pb2.NOTIFY_FAILURE, [], notifiers={"page": page}) == []
    assert len(skipped) == 2
    assert "removed-since" in skipped[0] and "not in this node's config" in skipped[0]
    assert "webhook_hosts" in skipped[1]
    assert host_allowed("a.example", ["*.example"]) and not host_allowed("example", ["*.example"])
    assert host_allowed("HOOKS.example.com.", ["hooks.example.com"])
    assert not host_allowed("evil-hooks.example.com", ["hooks.example.com"])


def test_targets_for_delivers_once_to_a_destination_listed_twice() -> None:
    task = make_task(webhook("https://a.example/hook", common_pb2.NOTIFY_FAILURE))
    glob = webhook("https://a.example/hook")
    assert targets_for(task, common_pb2.NOTIFY_FAILURE, [glob], webhook_hosts=HOSTS) == [task.spec.notify[0]]
    assert targets_for(task, common_pb2.NOTIFY_TIMEOUT, [glob], webhook_hosts=HOSTS) == [glob]


# ------------------------------------------------------------------------------------------ validation


def test_validate_targets_accepts_good_targets() -> None:
    validate_targets(
        [
            webhook("https://hooks.example.com/services/T0/B0/xyz?x=1", common_pb2.NOTIFY_FAILURE),
            webhook("http://user:pw@127.0.0.1:8080/"),
            command_target(["notify-send", "cron"], cwd="/tmp"),
        ],
        "spec.notify",
    )


@pytest.mark.parametrize(
    ("target", "field", "words"),
    [
        (webhook("ftp://example.com/x"), "spec.notify[0].webhook_url", "http or https"),
        (webhook("example.com/hook"), "spec.notify[0].webhook_url", "http or https"),
        (webhook("https:///nohost"), "spec.notify[0].webhook_url", "no host"),
        (webhook("https://example.com:99999/"), "spec.notify[0].webhook_url", "not a valid URL"),
        (webhook("https://example.com/a b"), "spec.notify[0].webhook_url", "spaces"),
        (webhook(""), "spec.notify[0].webhook_url", "empty"),
        (common_pb2.NotifyTarget(), "spec.notify[0]", "webhook_url or command"),
        (command_target([]), "spec.notify[0].command.argv", "argv[0]"),
        (command_target(["x"], cwd="relative/dir"), "spec.notify[0].command.cwd", "absolute"),
        (
            webhook("https://example.com/", common_pb2.NOTIFY_FAILURE, 0),
            "spec.notify[0].events[1]",
            "unknown event",
        ),
    ],
)
def test_validate_targets_names_the_bad_field(
    target: common_pb2.NotifyTarget, field: str, words: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_targets([target], "spec.notify")
    assert info.value.field == field
    assert words in info.value.problem


def test_validate_targets_reports_the_index_and_a_limit() -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_targets([webhook("https://ok.example/"), webhook("gopher://x")], "notify.targets")
    assert info.value.field == "notify.targets[1].webhook_url"
    with pytest.raises(InvalidArgument, match="at most 16"):
        validate_targets([webhook("https://ok.example/")] * 17, "spec.notify")


def test_describe_target_hides_paths_and_credentials() -> None:
    secret = webhook("https://user:pw@hooks.example.com:8443/services/T0/B0/SECRET?token=abc")
    assert describe_target(secret) == "https://hooks.example.com:8443"
    assert describe_target(command_target(["/usr/local/bin/page-oncall", "--x"])) == "command:page-oncall"


# ------------------------------------------------------------------------------ delivery: real targets


class Hook:
    """A loopback stdlib HTTP server in a thread: answers with the scripted statuses, records requests."""

    def __init__(self, loop: asyncio.AbstractEventLoop, statuses: Sequence[int]) -> None:
        self.requests: asyncio.Queue[tuple[str, dict[str, str], bytes]] = asyncio.Queue()
        statuses_left = list(statuses)
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = statuses_left.pop(0) if statuses_left else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                loop.call_soon_threadsafe(
                    hook.requests.put_nowait, (self.path, dict(self.headers.items()), body)
                )

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(WAIT_S)


def start(notifier: Notifier) -> asyncio.Task[None]:
    return asyncio.create_task(notifier.run(), name="notifier")


async def stop(notifier: Notifier, task: asyncio.Task[None]) -> None:
    await asyncio.wait_for(notifier.close(), WAIT_S)
    await asyncio.wait_for(task, WAIT_S)


@pytest.fixture
def hook_factory() -> Iterator[list[Hook]]:
    hooks: list[Hook] = []
    yield hooks
    for h in hooks:
        h.close()


@pytest.mark.asyncio
async def test_webhook_retries_after_500_with_the_same_delivery_id(hook_factory: list[Hook]) -> None:
    hook = Hook(asyncio.get_running_loop(), [500, 200])
    hook_factory.append(hook)
    sleeps = Sleeps()
    n = failure(make_task(webhook(hook.url + "/hooks/cron?k=v")))
    notifier = Notifier(
        webhook_hosts=HOSTS, clock=FixedClock(), sleep=sleeps, initial_backoff_s=1.0, timeout_s=5.0
    )
    task = start(notifier)
    try:
        assert notifier.submit(n)
        first = await asyncio.wait_for(hook.requests.get(), WAIT_S)
        second = await asyncio.wait_for(hook.requests.get(), WAIT_S)
        await asyncio.wait_for(notifier.join(), WAIT_S)
    finally:
        await stop(notifier, task)

    for path, headers, body in (first, second):
        assert path == "/hooks/cron?k=v"
        assert headers["Content-Type"] == "application/json"
        assert headers["Cronraft-Event"] == "failure"
        assert headers["Cronraft-Delivery"] == delivery_id(n)
        assert json.loads(body) == notification_body(n, now_ms=NOW_MS)
    assert (first[1]["Cronraft-Attempt"], second[1]["Cronraft-Attempt"]) == ("1", "2")
    assert first[2] == second[2]  # byte for byte the same body on a retry
    assert sleeps.waits == [1.0]
    assert (notifier.stats.delivered, notifier.stats.failed, notifier.stats.dropped) == (1, 0, 0)


@pytest.mark.asyncio
async def test_webhook_credentials_in_the_url_become_basic_auth(hook_factory: list[Hook]) -> None:
    hook = Hook(asyncio.get_running_loop(), [204])
    hook_factory.append(hook)
    url = hook.url.replace("http://", "http://us%40er:p%3Aw@") + "/h"
    notifier = Notifier(webhook_hosts=HOSTS, sleep=Sleeps(), timeout_s=5.0)
    task = start(notifier)
    try:
        assert notifier.submit(failure(make_task(webhook(url))))
        path, headers, _ = await asyncio.wait_for(hook.requests.get(), WAIT_S)
        await asyncio.wait_for(notifier.join(), WAIT_S)
    finally:
        await stop(notifier, task)
    assert path == "/h"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"us@er:p:w").decode()
    assert notifier.stats.delivered == 1


@pytest.mark.asyncio
async def test_command_target_gets_the_body_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "body.json"
    env_out = tmp_path / "env.json"
    script = (
        "import json, os, sys; "
        f"open({str(out)!r}, 'wb').write(sys.stdin.buffer.read()); "
        f"json.dump({{k: v for k, v in os.environ.items() if k.startswith(('CRONRAFT_', 'MY_'))}}, "
        f"open({str(env_out)!r}, 'w'))"
    )
    target = command_target([sys.executable, "-c", script], cwd=str(tmp_path))
    target.command.env["MY_VAR"] = "1"
    n = failure(make_task(common_pb2.NotifyTarget(notifier="run")))  # the config's command, by name
    notifier = Notifier(
        notifiers={"run": target}, clock=FixedClock(), sleep=Sleeps(), timeout_s=WAIT_S, base_env={}
    )
    task = start(notifier)
    try:
        assert notifier.submit(n)
        await asyncio.wait_for(notifier.join(), WAIT_S)
    finally:
        await stop(notifier, task)
    assert notifier.stats.delivered == 1
    assert json.loads(out.read_bytes()) == notification_body(n, now_ms=NOW_MS)
    assert json.loads(env_out.read_text()) == {
        "MY_VAR": "1",
        "CRONRAFT_NOTIFY_EVENT": "failure",
        "CRONRAFT_NOTIFY_DELIVERY": delivery_id(n),
        "CRONRAFT_NOTIFY_ATTEMPT": "1",
    }


@pytest.mark.asyncio
async def test_command_is_killed_after_the_timeout_and_retried() -> None:
    hang = command_target([sys.executable, "-c", "import time; time.sleep(60)"])
    sleeps = Sleeps()
    notifier = Notifier(
        notifiers={"hang": hang}, sleep=sleeps, timeout_s=0.3, max_attempts=2, initial_backoff_s=0.5
    )
    task = start(notifier)
    with structlog.testing.capture_logs() as logs:
        try:
            assert notifier.submit(failure(make_task(common_pb2.NotifyTarget(notifier="hang"))))
            await asyncio.wait_for(notifier.join(), WAIT_S)
        finally:
            await stop(notifier, task)
    assert (notifier.stats.delivered, notifier.stats.failed) == (0, 1)
    assert sleeps.waits == [0.5]
    given_up = [e for e in logs if e["event"] == "notification given up"]
    assert len(given_up) == 1
    assert given_up[0]["log_level"] == "warning"
    assert given_up[0]["attempts"] == 2
    assert "timed out" in given_up[0]["error"]


@pytest.mark.asyncio
async def test_real_sender_counts_a_refused_connection_as_a_failed_attempt() -> None:
    port = free_port()  # reserved for this process, so nobody listens on it
    notifier = Notifier(webhook_hosts=HOSTS, sleep=Sleeps(), max_attempts=1, timeout_s=5.0)
    task = start(notifier)
    with structlog.testing.capture_logs() as logs:
        try:
            assert notifier.submit(failure(make_task(webhook(f"http://127.0.0.1:{port}/x"))))
            await asyncio.wait_for(notifier.join(), WAIT_S)
        finally:
            await stop(notifier, task)
    assert notifier.stats.failed == 1
    (given_up,) = [e for e in logs if e["event"] == "notification given up"]
    assert "ConnectionRefusedError" in given_up["error"]
    assert given_up["target"] == f"http://127.0.0.1:{port}"


# ------------------------------------------------------------------------------ delivery: fake sender


class FakeSender:
    """A scripted `Sender`: answers `post` with the given statuses (then the last one forever), or hangs
    when `hang` is set; records every call."""

    def __init__(self, statuses: Sequence[int] = (200,), *, hang: bool = False) -> None:
        self.statuses = list(statuses)
        self.hang = hang
        self.posts: list[tuple[str, dict[str, str]]] = []
        self.entered = asyncio.Event()
        self.cancelled = 0

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
        self.posts.append((url, dict(headers)))
        self.entered.set()
        if self.hang:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    async def run(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: str, stdin: bytes, timeout_s: float
    ) -> int:
        return 0


@pytest.mark.asyncio
async def test_gives_up_after_max_attempts_with_exponential_backoff() -> None:
    sender = FakeSender([503])
    sleeps = Sleeps()
    notifier = Notifier(
        webhook_hosts=HOSTS,
        sender=sender,
        sleep=sleeps,
        max_attempts=5,
        initial_backoff_s=1.0,
        max_backoff_s=5.0,
    )
    task = start(notifier)
    with structlog.testing.capture_logs() as logs:
        try:
            assert notifier.submit(failure())
            await asyncio.wait_for(notifier.join(), WAIT_S)
        finally:
            await stop(notifier, task)
    assert len(sender.posts) == 5
    assert {h["Cronraft-Delivery"] for _, h in sender.posts} == {delivery_id(failure())}
    assert sleeps.waits == [1.0, 2.0, 4.0, 5.0]
    assert (notifier.stats.delivered, notifier.stats.failed) == (0, 1)
    assert [e["log_level"] for e in logs if e["log_level"] in ("info", "warning")] == ["warning"]


@pytest.mark.asyncio
async def test_a_client_error_is_not_retried_but_429_is() -> None:
    gone = FakeSender([404])
    notifier = Notifier(webhook_hosts=HOSTS, sender=gone, sleep=Sleeps(), max_attempts=5)
    task = start(notifier)
    try:
        notifier.submit(failure())
        await asyncio.wait_for(notifier.join(), WAIT_S)
    finally:
        await stop(notifier, task)
    assert (len(gone.posts), notifier.stats.failed) == (1, 1)

    busy = FakeSender([429, 429, 204])
    notifier = Notifier(webhook_hosts=HOSTS, sender=busy, sleep=Sleeps(), max_attempts=5)
    task = start(notifier)
    try:
        notifier.submit(failure())
        await asyncio.wait_for(notifier.join(), WAIT_S)
    finally:
        await stop(notifier, task)
    assert (len(busy.posts), notifier.stats.delivered) == (3, 1)


@pytest.mark.asyncio
async def test_each_target_is_one_delivery_and_global_targets_get_it_too() -> None:
    sender = FakeSender([200])
    task_hook = webhook("https://task.example/hook")
    notifier = Notifier(
        webhook_hosts=HOSTS, sender=sender, sleep=Sleeps(), global_targets=[webhook("https://ops.example/")]
    )
    task = start(notifier)
    try:
        notifier.submit(failure(make_task(task_hook)))
        await asyncio.wait_for(notifier.join(), WAIT_S)
    finally:
        await stop(notifier, task)
    assert sorted(url for url, _ in sender.posts) == ["https://ops.example/", "https://task.example/hook"]
    assert notifier.stats.delivered == 2


@pytest.mark.asyncio
async def test_a_full_queue_drops_and_counts_and_a_notification_without_targets_is_not_queued() -> None:
    notifier = Notifier(
        webhook_hosts=HOSTS, sender=FakeSender(), max_queue=3
    )  # not running: nothing leaves the queue
    two = make_task(webhook("https://a.example/"), webhook("https://b.example/"))
    with structlog.testing.capture_logs() as logs:
        assert notifier.submit(failure(two))
        assert not notifier.submit(failure(two, execution_id="e2"))  # 2 + 2 > 3: all or nothing
        assert not notifier.submit(failure(two, execution_id="e3"))
        assert notifier.submit(failure(make_task(webhook("https://c.example/"))))
        assert notifier.submit(failure(make_task()))  # no target: nothing to do
    assert notifier.stats.dropped == 2
    assert notifier.pending == 3
    assert len([e for e in logs if e["log_level"] == "warning"]) == 1  # one warning per overload episode
    await notifier.close()
    assert notifier.stats.abandoned == 3
    assert not notifier.submit(failure())
    assert notifier.stats.dropped == 3


@pytest.mark.asyncio
async def test_close_stops_promptly_and_abandons_what_is_in_flight() -> None:
    sender = FakeSender(hang=True)
    notifier = Notifier(webhook_hosts=HOSTS, sender=sender, sleep=Sleeps(), max_concurrency=1)
    task = start(notifier)
    assert notifier.submit(failure())
    assert notifier.submit(failure(execution_id="e2"))  # waits for the one slot
    await asyncio.wait_for(sender.entered.wait(), WAIT_S)
    async with asyncio.timeout(2.0):
        await notifier.close()
        await task
    assert task.done() and task.exception() is None
    assert sender.cancelled == 1
    assert notifier.stats.abandoned == 2
    assert notifier.pending == 0
    await notifier.close()  # idempotent


@pytest.mark.asyncio
async def test_close_with_drain_waits_for_pending_deliveries() -> None:
    sender = FakeSender([200])
    notifier = Notifier(webhook_hosts=HOSTS, sender=sender, sleep=Sleeps())
    task = start(notifier)
    for i in range(5):
        assert notifier.submit(failure(execution_id=f"e{i}"))
    async with asyncio.timeout(WAIT_S):
        await notifier.close(drain_s=WAIT_S)
        await task
    assert (notifier.stats.delivered, notifier.stats.abandoned) == (5, 0)


@pytest.mark.asyncio
async def test_cancelling_run_is_a_cancellation() -> None:
    notifier = Notifier(webhook_hosts=HOSTS, sender=FakeSender())
    task = start(notifier)
    await asyncio.sleep(0)  # let run() start waiting on its queue
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await notifier.close()
