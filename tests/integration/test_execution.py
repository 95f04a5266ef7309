"""Execution semantics with real processes: retries into the dead-letter queue with notifications,
timeouts killing the whole process tree, cancelling a running command, HTTP and handler payloads."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cronraft.client import Client, at, command, shell
from cronraft.proto.v1 import common_pb2, scheduler_pb2

from .harness import Cluster, Worker, started, wait_for
from .semantics import final_execution, only_execution, process_alive

pytestmark = pytest.mark.integration

HANDLERS = """
from cronraft.client.handlers import handler

@handler("greet")
async def greet(ctx, name):
    return {"hello": name, "execution": ctx.execution_id}
"""


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory, module_clusters: list[Cluster]) -> Cluster:
    """One cluster for the module: each test uses its own task names and leaves every node running."""
    root = tmp_path_factory.mktemp("execution")
    (root / "my_handlers.py").write_text(HANDLERS)
    # The dead-letter test's task webhook is a loopback server: a node delivers a task's webhook only to
    # a host of its [notify] webhook_hosts (issue 13).
    c = Cluster(root, n=3, extra_toml='[notify]\nwebhook_hosts = ["127.0.0.1"]\n')
    module_clusters.append(c)
    w1 = Worker("w1", capacity=8, extra_args=("--handlers", "my_handlers"), env={"PYTHONPATH": str(root)})
    return started(c, workers=(w1,))


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    return module_cluster


class Hook:
    """A local HTTP endpoint on loopback that records what it receives."""

    def __init__(self, status: int = 200, body: bytes = b"ok") -> None:
        received: list[tuple[str, dict[str, str], bytes]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                received.append((self.command, dict(self.headers), self.rfile.read(n)))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _soon() -> common_pb2.Schedule:
    return at(int(time.time() * 1000) + 500)


def test_failures_retry_then_dead_letter_notify_and_redrive(cluster: Cluster) -> None:
    hook = Hook()
    try:
        with Client(cluster.servers, timeout_s=30) as client:
            spec = common_pb2.TaskSpec(
                name="always-fails",
                schedule=_soon(),
                payload=command("sh", "-c", "echo boom >&2; exit 3"),
                max_attempts=2,
                retry=common_pb2.RetryPolicy(initial_backoff_ms=500),
            )
            spec.notify.append(common_pb2.NotifyTarget(webhook_url=hook.url))
            task = client.create_task_spec(spec)
            ex = final_execution(client, only_execution(client, task.task_id).execution_id, timeout_s=60)
            assert ex.state == common_pb2.EXECUTION_FAILED and ex.attempt == 2 and ex.dead_lettered
            assert [a.exit_code for a in ex.attempts] == [3, 3]
            letters = list(client.list_dead_letters(task_id=task.task_id))
            assert [d.execution_id for d in letters] == [ex.execution_id]
            assert b"boom" in letters[0].stderr_tail
            events = wait_for(
                lambda: (
                    {json.loads(b)["event"] for _, _, b in hook.received} >= {"failure", "dead_letter"}
                    and hook.received
                ),
                30,
                "the notifications",
            )
            body = json.loads(events[0][2])
            assert (
                body["task"]["task_id"] == task.task_id
                and body["execution"]["execution_id"] == ex.execution_id
            )
            (again,) = client.redrive_dead_letters([ex.execution_id])
            assert again.execution_id == ex.execution_id
            redone = wait_for(
                lambda: (e := client.get_execution(ex.execution_id)).attempt >= 3 and e,
                30,
                "a redriven attempt",
            )
            assert redone.redrives == 1
    finally:
        hook.close()


def test_a_timeout_kills_the_whole_process_tree(cluster: Cluster, tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    script = f"sleep 60 & echo $! > {pid_file}; wait"
    with Client(cluster.servers, timeout_s=30) as client:
        task = client.create_task("hangs", _soon(), shell(script), timeout_ms=1_500)
        ex = final_execution(client, only_execution(client, task.task_id).execution_id, timeout_s=60)
    assert ex.state == common_pb2.EXECUTION_TIMED_OUT
    pid = int(pid_file.read_text())
    wait_for(lambda: not process_alive(pid), 10, "the grandchild to be gone")


def test_cancelling_a_running_execution_kills_it(cluster: Cluster, tmp_path: Path) -> None:
    started = tmp_path / "started"
    with Client(cluster.servers, timeout_s=30) as client:
        task = client.create_task("long", _soon(), shell(f"touch {started}; exec sleep 60"))
        ex = only_execution(client, task.task_id)
        wait_for(started.exists, 30, "the command to start")
        client.cancel_execution(ex.execution_id, reason="not needed")
        done = final_execution(client, ex.execution_id, timeout_s=60)
    assert done.state == common_pb2.EXECUTION_CANCELLED


def test_http_and_handler_payloads_run_on_the_worker(cluster: Cluster) -> None:
    hook = Hook(body=b"pong")
    try:
        with Client(cluster.servers, timeout_s=30) as client:
            http_payload = common_pb2.Payload(
                http=common_pb2.HttpPayload(url=hook.url, method="POST", body=b"ping")
            )
            t1 = client.create_task("call", _soon(), http_payload)
            handler_payload = common_pb2.Payload(
                handler=common_pb2.HandlerPayload(name="greet", args_json='{"name": "ada"}')
            )
            t2 = client.create_task("greet", _soon(), handler_payload)
            e1 = final_execution(client, only_execution(client, t1.task_id).execution_id, timeout_s=60)
            e2 = final_execution(client, only_execution(client, t2.task_id).execution_id, timeout_s=60)
        assert e1.state == common_pb2.EXECUTION_SUCCEEDED and e1.stdout_tail.endswith(b"pong")
        method, headers, body = hook.received[0]
        assert method == "POST" and body == b"ping" and headers["Cronraft-Execution-Id"] == e1.execution_id
        assert e2.state == common_pb2.EXECUTION_SUCCEEDED
        assert json.loads(e2.return_value) == {"hello": "ada", "execution": e2.execution_id}
    finally:
        hook.close()


def test_full_output_is_kept_beyond_the_tails_and_followable(cluster: Cluster) -> None:
    import subprocess
    import sys

    lines = 20_000  # ~200 KB, far beyond the 64 KiB tail kept with the result
    script = f"i=0; while [ $i -lt {lines} ]; do echo line-$i; i=$((i+1)); done; echo done >&2"
    with Client(cluster.servers, timeout_s=30) as client:
        task = client.create_task("chatty", _soon(), shell(script))
        ex = final_execution(client, only_execution(client, task.task_id).execution_id, timeout_s=60)
        assert ex.state == common_pb2.EXECUTION_SUCCEEDED and len(ex.stdout_tail) <= 64 * 1024

        def complete() -> bool:
            page = client.get_execution_logs(ex.execution_id, max_bytes=4 << 20)
            return page.stdout.count(b"\n") == lines and page.stderr == b"done\n"

        wait_for(complete, 20, "the full log")  # pieces are proposed a moment after the result
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cronraft.client.cli",
            "--server",
            cluster.servers,
            "logs",
            "-f",
            ex.execution_id,
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == b"line-0" and out[-1] == f"line-{lines - 1}".encode() and len(out) == lines
    assert proc.stderr == b"done\n"


LOG_CAP = 1 << 20  # what the log keeps of each stream of an attempt (docs/cli.md, "Output logs")
GAP = b"not kept here"  # in the worker's note where it dropped live output


def _stored_log(
    client: Client, execution_id: str, out_len: int, err_len: int, timeout_s: float = 10
) -> scheduler_pb2.GetExecutionLogsResponse:
    """The attempt's log once its streams hold `out_len` and `err_len` bytes, or as it is after
    `timeout_s` (its last pieces may be proposed a moment after the result)."""
    deadline = time.monotonic() + timeout_s
    while True:
        page = client.get_execution_logs(execution_id, max_bytes=4 << 20)
        if (len(page.stdout), len(page.stderr)) >= (out_len, err_len) or time.monotonic() > deadline:
            return page
        time.sleep(0.1)


def _cat_both(
    client: Client, tmp_path: Path, name: str, size: int
) -> tuple[bytes, bytes, common_pb2.Execution]:
    """`size` bytes of every value, different on stdout and stderr, written by two `cat`s at once (as
    fast as the pipes take them); returns them and the ended execution."""
    out, err = hashlib.shake_256(b"out").digest(size), hashlib.shake_256(b"err").digest(size)
    (tmp_path / "out.bin").write_bytes(out)
    (tmp_path / "err.bin").write_bytes(err)
    script = f"cat {tmp_path / 'out.bin'} & cat {tmp_path / 'err.bin'} >&2; wait"
    task = client.create_task(name, _soon(), shell(script))
    ex = final_execution(client, only_execution(client, task.task_id).execution_id, timeout_s=30)
    return out, err, ex


def test_fast_output_up_to_the_log_cap_is_kept_whole(cluster: Cluster, tmp_path: Path) -> None:
    """900 KiB on stdout and on stderr, written as fast as `cat` can: the log holds both byte for byte,
    with no note of dropped output. The worker stops reading a payload's pipes while what it read waits
    to be sent (the payload waits, as on a slow terminal) instead of dropping what it cannot send in
    time (it dropped all but 256 KiB per flush interval, leaving '[cronraft: N bytes ... not kept here]')."""
    with Client(cluster.servers, timeout_s=30) as client:
        out, err, ex = _cat_both(client, tmp_path, "fast-cat", 900 * 1024)
        assert ex.state == common_pb2.EXECUTION_SUCCEEDED, ex.error
        page = _stored_log(client, ex.execution_id, len(out), len(err))
    print(f"900 KiB x 2 streamed in {ex.attempts[-1].finished_at_ms - ex.attempts[-1].started_at_ms} ms")
    assert page.stdout.count(GAP) + page.stderr.count(GAP) == 0
    assert (len(page.stdout), page.stdout == out) == (len(out), True)
    assert (len(page.stderr), page.stderr == err) == (len(err), True)
    assert not page.truncated


def test_fast_output_past_the_log_cap_keeps_its_first_mebibyte(cluster: Cluster, tmp_path: Path) -> None:
    """1.25 MiB per stream as fast as `cat` can: the log keeps the first 1 MiB of each, byte for byte,
    marked truncated (the rule of the log's cap); the result's tails are the last 64 KiB."""
    with Client(cluster.servers, timeout_s=30) as client:
        out, err, ex = _cat_both(client, tmp_path, "fast-cat-past-cap", LOG_CAP + LOG_CAP // 4)
        assert ex.state == common_pb2.EXECUTION_SUCCEEDED, ex.error
        page = _stored_log(client, ex.execution_id, LOG_CAP, LOG_CAP)
    assert (len(page.stdout), page.stdout == out[:LOG_CAP]) == (LOG_CAP, True)
    assert (len(page.stderr), page.stderr == err[:LOG_CAP]) == (LOG_CAP, True)
    assert page.truncated
    assert ex.stdout_tail == out[-64 * 1024 :] and ex.stderr_tail == err[-64 * 1024 :]


def test_a_sensor_holds_the_payload_until_its_probe_succeeds_or_times_out(
    cluster: Cluster, tmp_path: Path
) -> None:
    ready = tmp_path / "data-ready"
    ran = tmp_path / "ran"
    with Client(cluster.servers, timeout_s=30) as client:
        spec = common_pb2.TaskSpec(
            name="needs-data",
            schedule=_soon(),
            payload=command("sh", "-c", f"date +%s%N > {ran}"),
            sensor=common_pb2.Sensor(
                probe=command("test", "-f", str(ready)), interval_ms=200, timeout_ms=30_000
            ),
        )
        task = client.create_task_spec(spec)
        ex = only_execution(client, task.task_id)
        wait_for(
            lambda: client.get_execution(ex.execution_id).state == common_pb2.EXECUTION_RUNNING, 30, "lease"
        )
        assert not ran.exists()  # probing: the payload waits
        ready.write_text("ok")
        done = final_execution(client, ex.execution_id, timeout_s=60)
        assert done.state == common_pb2.EXECUTION_SUCCEEDED and ran.exists()

        never = common_pb2.TaskSpec(
            name="never-ready",
            schedule=_soon(),
            payload=command("true"),
            sensor=common_pb2.Sensor(probe=command("false"), interval_ms=200, timeout_ms=1_500),
        )
        t2 = client.create_task_spec(never)
        failed = final_execution(client, only_execution(client, t2.task_id).execution_id, timeout_s=60)
    assert failed.state == common_pb2.EXECUTION_FAILED
    assert "sensor not satisfied" in failed.error
