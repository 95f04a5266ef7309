"""HTTP and Python-handler payloads, run by a real `Worker` against the fake leader of fake_gateway.py.

HTTP tests talk to a stdlib `http.server` on a free loopback port (in a thread); the "slow" route blocks
on a `threading.Event` released at teardown, never on a sleep. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import http.server
import json
import queue
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fake_gateway import (
    WAIT_S,
    FakeLeader,
    connected_stream,
    fake_leader,
    heartbeat_listing,
    make_lease,
    offers,
    running_worker,
    worker_config,
)

from cronraft.client import handlers
from cronraft.client._http import build_request
from cronraft.client._inprocess_runner import InProcessRunner
from cronraft.client._runner import StopReason
from cronraft.client.handlers import HandlerContext, HandlerRegistry, run_handler
from cronraft.client.worker import Worker, build_parser
from cronraft.clock import SystemClock
from cronraft.proto.v1 import common_pb2, worker_pb2

# -- an HTTP server to call -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.put(Seen(self.command, self.path, dict(self.headers.items()), body))
        route = self.path.split("?", 1)[0]
        if route == "/slow":
            self.server.release.wait(WAIT_S)
            return
        status, payload = {
            "/ok": (200, b"x" * 5000 + b"hello END"),
            "/unavailable": (503, b"try later"),
            "/echo": (201, body),
        }.get(route, (404, b"no such route"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Server", "test")
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = _any

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: queue.Queue[Seen] = queue.Queue()
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def next_request(self) -> Seen:
        return self.seen.get(timeout=WAIT_S)


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join(WAIT_S)


def http_payload(
    url: str,
    *,
    method: str = "",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    expected_status: list[int] | None = None,
) -> common_pb2.Payload:
    payload = common_pb2.Payload()
    payload.http.url = url
    payload.http.method = method
    payload.http.headers.update(headers or {})
    payload.http.body = body
    payload.http.expected_status.extend(expected_status or [])
    return payload


def handler_payload(name: str, args: dict[str, Any] | None = None) -> common_pb2.Payload:
    payload = common_pb2.Payload()
    payload.handler.name = name
    payload.handler.args_json = json.dumps(args) if args is not None else ""
    return payload


@contextlib.asynccontextmanager
async def setup(
    tmp_path: Path, handlers: HandlerRegistry | None = None, **overrides: Any
) -> AsyncIterator[tuple[FakeLeader, asyncio.Queue[worker_pb2.GatewayMessage], Worker]]:
    async with (
        fake_leader() as leader,
        running_worker(worker_config([leader.address], tmp_path, **overrides), handlers=handlers) as worker,
    ):
        yield leader, await connected_stream(leader), worker


async def results_for(leader: FakeLeader, *execution_ids: str) -> dict[str, common_pb2.AttemptResult]:
    """The first result of each of `execution_ids`, in whatever order they arrive."""
    results: dict[str, common_pb2.AttemptResult] = {}
    async with asyncio.timeout(WAIT_S):
        while results.keys() != set(execution_ids):
            result: common_pb2.AttemptResult = await leader.results.get()
            if result.execution_id in execution_ids:
                results.setdefault(result.execution_id, result)
    return results


async def run_one(
    tmp_path: Path,
    payload: common_pb2.Payload,
    *,
    handlers: HandlerRegistry | None = None,
    timeout_ms: int = 0,
    **overrides: Any,
) -> common_pb2.AttemptResult:
    async with setup(tmp_path, handlers, **overrides) as (leader, stream, _):
        stream.put_nowait(offers(make_lease("exec-1", payload=payload, token=(3, 42), timeout_ms=timeout_ms)))
        return await leader.result_for("exec-1")


# -- HTTP ---------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_http_200_succeeds_with_the_body_tail_and_identity_headers(
    tmp_path: Path, server: _Server
) -> None:
    result = await run_one(tmp_path, http_payload(server.url + "/ok?x=1"), output_tail_bytes=1000)
    assert result.outcome == common_pb2.ATTEMPT_SUCCEEDED, result.error
    assert result.exit_code == 200
    assert len(result.stdout_tail) == 1000  # the tail of a 5009-byte body
    assert result.stdout_tail.endswith(b"xhello END")
    summary = result.stderr_tail.decode()
    assert summary.startswith(f"> GET {server.url}/ok?x=1 HTTP/1.1\n")
    assert "> Cronraft-Execution-Id: exec-1\n" in summary
    assert "\n< HTTP/1.0 200 OK\n" in summary and "< X-Server: test\n" in summary
    seen = await asyncio.to_thread(server.next_request)
    assert (seen.method, seen.path) == ("GET", "/ok?x=1")
    assert seen.headers["Cronraft-Execution-Id"] == "exec-1"
    assert seen.headers["Cronraft-Attempt"] == "1"
    assert seen.headers["Cronraft-Nominal-Time"] == "2023-11-14T22:13:20.000Z"
    assert seen.headers["Cronraft-Fencing-Token"] == "3.42"
    assert seen.headers["Cronraft-Task-Id"] == "task-1"
    assert seen.headers["User-Agent"] == "cronraft-worker"


@pytest.mark.asyncio
async def test_http_unexpected_status_fails_with_the_status_as_exit_code(
    tmp_path: Path, server: _Server
) -> None:
    async with setup(tmp_path) as (leader, stream, _):
        failing = make_lease("exec-503", payload=http_payload(server.url + "/unavailable"))
        accepted = make_lease(
            "exec-ok", payload=http_payload(server.url + "/unavailable", expected_status=[503])
        )
        stream.put_nowait(offers(failing, accepted))
        results = await results_for(leader, "exec-503", "exec-ok")
        result = results["exec-503"]
        assert result.outcome == common_pb2.ATTEMPT_FAILED
        assert result.exit_code == 503
        assert result.error == "HTTP 503 Service Unavailable (expected 2xx)"
        assert result.stdout_tail == b"try later"
        ok = results["exec-ok"]
        assert ok.outcome == common_pb2.ATTEMPT_SUCCEEDED
        assert ok.exit_code == 503


@pytest.mark.asyncio
async def test_http_post_sends_body_and_headers_and_redacts_credentials(
    tmp_path: Path, server: _Server
) -> None:
    payload = http_payload(
        server.url + "/echo",
        method="post",
        headers={"Content-Type": "application/json", "Authorization": "Bearer s3cret", "X-Mine": "1"},
        body=b'{"a": 1}',
        expected_status=[201],
    )
    result = await run_one(tmp_path, payload)
    assert result.outcome == common_pb2.ATTEMPT_SUCCEEDED, result.error
    assert result.stdout_tail == b'{"a": 1}'
    seen = await asyncio.to_thread(server.next_request)
    assert seen.method == "POST"
    assert seen.body == b'{"a": 1}'
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Authorization"] == "Bearer s3cret"
    assert seen.headers["X-Mine"] == "1"
    assert b"> POST " in result.stderr_tail
    assert b"s3cret" not in result.stderr_tail
    assert b"Authorization: <redacted>" in result.stderr_tail


@pytest.mark.asyncio
async def test_http_slow_server_times_out(tmp_path: Path, server: _Server) -> None:
    result = await run_one(tmp_path, http_payload(server.url + "/slow"), timeout_ms=300)
    assert result.outcome == common_pb2.ATTEMPT_TIMED_OUT
    assert result.error == "timed out after 300 ms; HTTP request aborted"
    assert result.exit_code == -1
    assert (await asyncio.to_thread(server.next_request)).path == "/slow"


@pytest.mark.asyncio
async def test_http_cancel_aborts_the_request(tmp_path: Path, server: _Server) -> None:
    async with setup(tmp_path) as (leader, stream, worker):
        lease = make_lease("exec-c", payload=http_payload(server.url + "/slow"))
        stream.put_nowait(offers(lease))
        await asyncio.to_thread(server.next_request)  # the request is in flight
        stream.put_nowait(worker_pb2.GatewayMessage(cancel=worker_pb2.CancelAttempt(execution_id="exec-c")))
        result = await leader.result_for("exec-c")
        assert result.outcome == common_pb2.ATTEMPT_CANCELLED
        assert result.error == "cancelled; HTTP request aborted"
        assert worker.running == []


@pytest.mark.asyncio
async def test_http_connection_refused_and_bad_urls_fail(tmp_path: Path) -> None:
    closed = _Server()  # bind a port, then close it: nothing listens there any more
    url = closed.url
    closed.server_close()
    async with setup(tmp_path) as (leader, stream, _):
        stream.put_nowait(
            offers(
                make_lease("exec-refused", payload=http_payload(url + "/")),
                make_lease("exec-ftp", payload=http_payload("ftp://example.com/file")),
            )
        )
        results = await results_for(leader, "exec-refused", "exec-ftp")
        refused = results["exec-refused"]
        assert refused.outcome == common_pb2.ATTEMPT_FAILED
        assert refused.exit_code == -1
        assert refused.error.startswith(f"HTTP request to {url}/ failed: ConnectionRefusedError")
        ftp = results["exec-ftp"]
        assert ftp.exit_code == 126
        assert "only http:// and https://" in ftp.error


def test_http_request_building() -> None:
    payload = http_payload(
        "https://user:p%40ss@example.com:8443?q=1#frag",
        headers={"cronraft-attempt": "99", "User-Agent": "mine"},
    )
    request = build_request(make_lease("e", payload=payload))
    assert not isinstance(request, str)
    assert (request.method, request.https, request.host, request.port) == ("GET", True, "example.com", 8443)
    assert request.target == "/?q=1"
    assert request.url == "https://example.com:8443/?q=1"  # no password in messages
    headers = dict(request.headers)
    assert headers["Authorization"] == "Basic dXNlcjpwQHNz"  # user:p@ss
    assert headers["Cronraft-Attempt"] == "1" and "cronraft-attempt" not in headers
    assert headers["User-Agent"] == "mine"
    for bad, problem in [
        (http_payload("http://h/", method="GE T"), "payload.http.method"),
        (http_payload("http:///path"), "has no host"),
        (http_payload("http://h/a b"), "percent-encode"),
        (http_payload("http://h/", headers={"X": "a\r\nb"}), "CR, LF"),
        (http_payload("http://h/", headers={"Bad Name": "v"}), "not a valid header name"),
    ]:
        error = build_request(make_lease("e", payload=bad))
        assert isinstance(error, str) and problem in error, (bad, error)


# -- handlers -----------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_async_handler_gets_kwargs_and_context_and_returns_json(tmp_path: Path) -> None:
    registry = HandlerRegistry()
    contexts: list[HandlerContext] = []

    @registry.handler("greet")
    async def greet(ctx: HandlerContext, user_id: str, times: int = 1) -> dict[str, Any]:
        contexts.append(ctx)
        return {"hello": user_id, "times": times, "unicode": "é"}

    result = await run_one(
        tmp_path, handler_payload("greet", {"user_id": "u1", "times": 2}), handlers=registry
    )
    assert result.outcome == common_pb2.ATTEMPT_SUCCEEDED, result.error
    assert result.exit_code == 0
    assert json.loads(result.return_value) == {"hello": "u1", "times": 2, "unicode": "é"}
    (ctx,) = contexts
    assert ctx.execution_id == "exec-1"
    assert (ctx.task_id, ctx.task_name, ctx.attempt) == ("task-1", "nightly-report", 1)
    assert ctx.nominal_time_ms == 1_700_000_000_000
    assert ctx.nominal_time.isoformat() == "2023-11-14T22:13:20+00:00"
    assert ctx.fencing_token == "3.42"
    assert not ctx.cancelled.is_set()
    # for_lease fills the frozen dataclass without its __init__: the same value as one built with it.
    built = HandlerContext(
        execution_id="exec-1",
        task_id="task-1",
        task_name="nightly-report",
        attempt=1,
        nominal_time_ms=1_700_000_000_000,
        fencing_token="3.42",
        cancelled=ctx.cancelled,
    )
    assert ctx == built and repr(ctx) == repr(built) and hash(ctx) == hash(built)
    assert dataclasses.asdict(ctx).keys() == dataclasses.asdict(built).keys()
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.attempt = 2  # type: ignore[misc]


@pytest.mark.asyncio
async def test_sync_handler_runs_in_a_thread_and_none_is_null(tmp_path: Path) -> None:
    registry = HandlerRegistry()
    threads: list[str] = []
    worker_decorated: list[str] = []

    def record(ctx: HandlerContext, **kwargs: Any) -> None:
        threads.append(threading.current_thread().name)
        worker_decorated.append(json.dumps(kwargs))

    registry.register("record", record)
    async with setup(tmp_path, registry) as (leader, stream, worker):

        @worker.handler("add")  # the worker's decorator registers on its registry
        def add(ctx: HandlerContext, a: int, b: int) -> list[int]:
            return [a + b, threading.get_ident()]

        stream.put_nowait(
            offers(
                make_lease("exec-add", payload=handler_payload("add", {"a": 2, "b": 3})),
                make_lease("exec-rec", payload=handler_payload("record", {"k": [1]})),
            )
        )
        results = await results_for(leader, "exec-add", "exec-rec")
        added = results["exec-add"]
        assert added.outcome == common_pb2.ATTEMPT_SUCCEEDED, added.error
        total, ident = json.loads(added.return_value)
        assert total == 5 and ident != threading.get_ident()
        recorded = results["exec-rec"]
        assert recorded.return_value == b"null"
        assert threads == ["handler record exec-rec"]
        assert worker_decorated == ['{"k": [1]}']


@pytest.mark.asyncio
async def test_handler_failures(tmp_path: Path) -> None:
    registry = HandlerRegistry()

    @registry.handler("explode")
    async def explode(ctx: HandlerContext, user: str) -> None:
        raise ValueError(f"bad user {user}")

    @registry.handler("explode-sync")
    def explode_sync(ctx: HandlerContext) -> None:
        sys.exit(3)

    @registry.handler("big")
    async def big(ctx: HandlerContext) -> str:
        return "x" * 2000

    @registry.handler("opaque")
    async def opaque(ctx: HandlerContext) -> object:
        return object()

    cases = {
        "exec-raise": handler_payload("explode", {"user": "u9"}),
        "exec-exit": handler_payload("explode-sync"),
        "exec-big": handler_payload("big"),
        "exec-opaque": handler_payload("opaque"),
        "exec-unknown": handler_payload("nope"),
        "exec-args": handler_payload("explode", {"usr": "typo"}),
        "exec-json": handler_payload("big"),
    }
    cases["exec-json"].handler.args_json = "[1, 2]"
    async with setup(tmp_path, registry, max_return_value_bytes=1000) as (leader, stream, _):
        stream.put_nowait(offers(*(make_lease(e, payload=p) for e, p in cases.items())))
        results = await results_for(leader, *cases)
    assert all(r.outcome == common_pb2.ATTEMPT_FAILED for r in results.values())
    raised = results["exec-raise"]
    assert (raised.exit_code, raised.error) == (1, "handler 'explode' raised ValueError: bad user u9")
    assert raised.stderr_tail.startswith(b"Traceback")
    assert b"in explode\n" in raised.stderr_tail and b"ValueError: bad user u9" in raised.stderr_tail
    assert results["exec-exit"].error == "handler 'explode-sync' raised SystemExit: 3"
    assert (
        results["exec-big"].error == "handler 'big': return value too large: 2002 bytes as JSON (limit 1000)"
    )
    assert results["exec-big"].return_value == b""
    assert "not JSON-serialisable" in results["exec-opaque"].error
    unknown = results["exec-unknown"]
    assert unknown.exit_code == 127
    assert "no handler named 'nope'" in unknown.error and "big, explode" in unknown.error
    assert results["exec-args"].exit_code == 126
    assert results["exec-args"].error == (
        "handler 'explode': args_json does not fit its parameters: missing a required argument: 'user'"
    )
    assert results["exec-json"].exit_code == 126
    assert "must be a JSON object" in results["exec-json"].error


@pytest.mark.asyncio
async def test_timeout_cancels_an_async_handler(tmp_path: Path) -> None:
    registry = HandlerRegistry()
    started = asyncio.Event()
    observed: list[bool] = []

    @registry.handler("forever")
    async def forever(ctx: HandlerContext) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            observed.append(ctx.cancelled.is_set())
            raise

    result = await run_one(tmp_path, handler_payload("forever"), handlers=registry, timeout_ms=200)
    assert started.is_set()
    assert result.outcome == common_pb2.ATTEMPT_TIMED_OUT
    assert result.error == "timed out after 200 ms; handler aborted"
    assert observed == [True]  # cancelled, and the context said so


@pytest.mark.asyncio
async def test_a_stopped_sync_handler_is_abandoned_and_its_result_ignored(tmp_path: Path) -> None:
    registry = HandlerRegistry()
    running = threading.Event()
    release = threading.Event()
    saw_cancel: list[bool] = []

    @registry.handler("block")
    def block(ctx: HandlerContext) -> str:
        running.set()
        release.wait(WAIT_S)
        saw_cancel.append(ctx.cancelled.is_set())
        return "too late"

    try:
        async with setup(tmp_path, registry) as (leader, stream, worker):
            stream.put_nowait(offers(make_lease("exec-b", payload=handler_payload("block"))))
            await asyncio.to_thread(running.wait, WAIT_S)
            await heartbeat_listing(leader, {"exec-b"})
            cancel = worker_pb2.CancelAttempt(execution_id="exec-b")
            stream.put_nowait(worker_pb2.GatewayMessage(cancel=cancel))
            result = await leader.result_for("exec-b")
            assert result.outcome == common_pb2.ATTEMPT_CANCELLED
            assert result.error == "cancelled; handler aborted"
            assert result.return_value == b""
            assert worker.running == []
    finally:
        release.set()
    await asyncio.to_thread(
        lambda: [t.join(WAIT_S) for t in threading.enumerate() if t.name == "handler block exec-b"]
    )
    assert saw_cancel == [True]


def handler_runner(registry: HandlerRegistry, lease: worker_pb2.Lease, **kwargs: Any) -> InProcessRunner:
    work = functools.partial(run_handler, registry, lease)
    return InProcessRunner(lease, work, what="handler", clock=SystemClock(), **kwargs)


@pytest.mark.asyncio
async def test_a_handler_that_ignores_cancellation_is_abandoned_after_the_grace() -> None:
    registry = HandlerRegistry()
    release = asyncio.Event()
    cancellations: list[int] = []

    @registry.handler("stubborn")
    async def stubborn(ctx: HandlerContext) -> str:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                cancellations.append(1)
        return "finished anyway"

    lease = make_lease("exec-s", payload=handler_payload("stubborn"), timeout_ms=100)
    try:
        result = await asyncio.wait_for(handler_runner(registry, lease, kill_grace_s=0.1).run(), WAIT_S)
    finally:
        release.set()  # let the abandoned task end before the loop closes
    assert result.outcome == common_pb2.ATTEMPT_TIMED_OUT
    assert result.return_value == b""
    assert cancellations == [1]  # cancelled once, then left alone


@pytest.mark.asyncio
async def test_a_fenced_handler_is_reported_at_once_without_waiting_for_the_grace() -> None:
    registry = HandlerRegistry()
    started = asyncio.Event()
    release = asyncio.Event()

    @registry.handler("slow-cleanup")
    async def slow_cleanup(ctx: HandlerContext) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            await release.wait()  # a cleanup that outlives the test, unless released

    lease = make_lease("exec-f", payload=handler_payload("slow-cleanup"))
    runner = handler_runner(registry, lease, kill_grace_s=WAIT_S * 10)
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(started.wait(), WAIT_S)
        runner.stop(StopReason.FENCED)
        result = await asyncio.wait_for(task, WAIT_S)  # well before the (huge) kill grace
    finally:
        release.set()
    assert result.outcome == common_pb2.ATTEMPT_FAILED
    assert result.error == "lease expired before renewal; handler aborted (self-fenced)"


@pytest.mark.asyncio
async def test_workers_fall_back_on_the_module_level_registry(tmp_path: Path) -> None:
    @handlers.handler("test-payloads-global")
    async def global_handler(ctx: HandlerContext, n: int) -> int:
        return n * 2

    try:
        result = await run_one(tmp_path, handler_payload("test-payloads-global", {"n": 21}))
        assert result.return_value == b"42"
        with pytest.raises(ValueError, match="already registered"):
            handlers.handler("test-payloads-global")(lambda ctx: None)
    finally:
        handlers.registry.unregister("test-payloads-global")


def test_schedworker_handlers_flag_imports_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cronraft_test_jobs.py").write_text(
        "from cronraft.client.handlers import handler\n"
        "@handler('test-jobs-purge')\n"
        "def purge(ctx, days=30):\n"
        "    return days\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    args = build_parser().parse_args(["--handlers", "cronraft_test_jobs", "--handlers", "json"])
    assert args.handler_modules == ["cronraft_test_jobs", "json"]
    try:
        handlers.import_handler_modules(args.handler_modules)
        assert "test-jobs-purge" in handlers.registry
    finally:
        handlers.registry.unregister("test-jobs-purge")
        sys.modules.pop("cronraft_test_jobs", None)
