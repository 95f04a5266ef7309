"""The worker agent: `schedworker` and the `Worker` class.

A worker keeps one `WorkerGateway.Connect` stream open to the leader (following `NotLeader` redirects and
the `cronraft-leader` trailer, else trying the configured servers round robin with capped exponential
backoff), runs the attempts it is offered, renews their leases with one heartbeat per interval, and
reports results through the durable outbox (`_outbox.Outbox`).

Payload kinds (docs/payloads.md): argv commands and shell strings run as process groups
(`_runner.AttemptRunner`); HTTP requests (`_http`) and Python handlers (`handlers`) run in-process
(`_runner.InProcessRunner`). Handlers are registered with `@worker.handler(name)`, or on the
module-level registry (`cronraft.client.handlers.handler`) that every worker falls back on and that
`schedworker --handlers MODULE` fills by importing MODULE.

The worker's policy (`_policy.WorkerPolicy`: `schedworker --policy FILE`, `--allow-shell`,
`--allow-http-loopback`) decides what it runs at all: a lease it refuses (a payload kind it does not
accept, a program off its allowlist, a secret it does not hold, an address its egress rules refuse) is
reported ATTEMPT_REFUSED with the reason, before anything starts, and its execution ends failed.

Lease deadlines are local and monotonic (DESIGN.md I5): an attempt's deadline starts at receive time +
TTL and moves to (send time of a heartbeat the leader renewed) + TTL; the TTL is the lease's own
`lease_ttl_ms`, else the Welcome's. The send time, not the ack time, is used because the leader renewed
the lease no earlier than it received the heartbeat. When a deadline passes (partition, slow leader), the
worker kills the attempt itself (SIGKILL, no grace) and records a FAILED result: the leader may already
have re-granted the execution elsewhere. Attempts keep running while the stream is
down; only their leases decide their fate.

A result is durably in the outbox before it is sent, and leaves it only on the leader's `ResultAcks`;
every new stream resends the whole outbox, and a restarted worker loads it (results made before the
restart are delivered, not re-run).

Python 3.11's `asyncio.wait_for` can swallow a cancellation that races with completion (CPython
gh-86296, fixed in 3.12), which would leave a cancelled loop running: this module uses
`asyncio.timeout` instead.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import enum
import functools
import gc
import logging
import math
import os
import random
import re
import signal
import socket
import sys
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

# types-grpcio is not in the dev dependencies yet: without it grpc is untyped (Any), with it the ignore
# is unused; `unused-ignore` keeps mypy strict quiet in both cases.
import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]
import structlog

from cronraft.bounds import (
    CLIENT_MAX_RECEIVE_BYTES,
    MAX_TAG_LEN,
    MAX_WORKER_CAPACITY,
    MAX_WORKER_ID,
    MAX_WORKER_LABELS,
    MAX_WORKER_QUEUES,
)
from cronraft.client import _argnames
from cronraft.client import handlers as _handlers
from cronraft.client._http import run_http
from cronraft.client._outbox import AttemptKey, Outbox, attempt_key, result_key
from cronraft.client._policy import WorkerPolicy, load_policy, policy_from_dict
from cronraft.client._runner import (
    DEFAULT_KILL_GRACE_S,
    DEFAULT_OUTPUT_TAIL_BYTES,
    AttemptRunner,
    Clock,
    InProcessIO,
    InProcessRunner,
    OutputSink,
    ProcessIdentity,
    Runner,
    StopReason,
    SystemClock,
    WorkOutcome,
    stop_result,
)
from cronraft.client._transport import Transport, add_transport_arguments, transport_from_args
from cronraft.client.handlers import (
    MAX_RETURN_VALUE_BYTES,
    Handler,
    HandlerContext,
    HandlerRegistry,
    run_handler,
)
from cronraft.errors import ConfigError, InvalidArgument
from cronraft.failpoint import failpoint
from cronraft.proto.v1 import common_pb2, worker_pb2, worker_pb2_grpc

__all__ = [
    "HandlerContext",
    "HandlerRegistry",
    "Worker",
    "WorkerConfig",
    "WorkerPolicy",
    "load_policy",
    "main",
    "policy_from_dict",
]

_log = structlog.get_logger(__name__)
_H = TypeVar("_H", bound=Handler)

LEADER_METADATA_KEY = "cronraft-leader"
DEFAULT_SERVER = "127.0.0.1:50051"
# Used only when neither the lease nor the Welcome carries a TTL (a server bug): renew or die in 10 s.
_FALLBACK_LEASE_TTL_S = 10.0
_FALLBACK_HEARTBEAT_S = 1.0
# A held start asks the leader to confirm its lease this long before the start instant (one heartbeat
# shared by every start of that instant): the answer normally arrives before the start, adding no lag.
_CONFIRM_AHEAD_S = 0.1
# Held starts are gated per start instant rounded up to this (a gate never opens before its starts).
_GATE_S = 0.002
_HELLO_TIMEOUT_S = 3.0  # short: a node behind a partition must not hold the worker for a lease TTL
_AVOID_S = 5.0  # after a stream to a node went stale or timed out, try the other nodes first for this long
_MAX_RESULTS_MESSAGE_BYTES = 1024 * 1024
_MAX_RESULTS_PER_MESSAGE = 1_000  # well below what a leader accepts (cronraft.bounds)
# Live output waiting for the next flush, per attempt and stream; older bytes are dropped beyond it
# (the result's tails are the reliable record; live output is best effort).
_MAX_LIVE_OUTPUT_BYTES = 256 * 1024
_GC_THRESHOLD = 50_000  # allocations between two young-generation collections (CPython's default: 700)


@dataclass(frozen=True)
class WorkerConfig:
    """A worker's settings, validated once."""

    servers: tuple[str, ...]
    worker_id: str
    outbox_dir: Path
    capacity: int = 4
    queues: tuple[str, ...] = ("default",)
    labels: Mapping[str, str] = field(default_factory=dict)
    kill_grace_s: float = DEFAULT_KILL_GRACE_S
    output_tail_bytes: int = DEFAULT_OUTPUT_TAIL_BYTES
    shutdown_grace_s: float = 10.0
    backoff_initial_s: float = 0.1
    # Short: while no leader is known the worker must find the new one well inside a lease TTL, or its
    # running attempts self-fence and its finished results arrive after their leases expired (fault
    # scenario S2 at soak size: reconnects 4-5 s after the new leader was ready, 8 duplicate runs).
    backoff_max_s: float = 0.5
    output_flush_interval_s: float = 0.2
    result_resend_s: float = 30.0  # resend results not acknowledged on the same stream after this long
    fence_check_interval_s: float = 0.05
    max_return_value_bytes: int = MAX_RETURN_VALUE_BYTES  # a handler's JSON return value, at most
    # What this worker agrees to run (client/_policy.py); the default refuses shell payloads, HTTP to
    # loopback/private/link-local/metadata addresses, and passes payloads only a few variables.
    policy: WorkerPolicy = field(default_factory=WorkerPolicy)
    transport: Transport = field(default_factory=Transport)  # TLS and token (client._transport)

    def __post_init__(self) -> None:
        if not self.servers or any(not s for s in self.servers):
            raise ConfigError("servers: give at least one HOST:PORT (e.g. --server 127.0.0.1:50051)")
        if not self.worker_id:
            raise ConfigError("worker_id: must not be empty (--id)")
        # The leader refuses a Hello past these (cronraft.bounds): say so at start, not at each connect.
        wid = self.worker_id
        if len(wid) > MAX_WORKER_ID or not wid.isprintable() or any(c.isspace() for c in wid):
            raise ConfigError(f"worker_id: 1 to {MAX_WORKER_ID} printable characters without spaces (--id)")
        if not 1 <= self.capacity <= MAX_WORKER_CAPACITY:
            raise ConfigError(
                f"capacity: must be between 1 and {MAX_WORKER_CAPACITY}, got {self.capacity} (--capacity)"
            )
        if not self.queues or any(not q for q in self.queues):
            raise ConfigError("queues: queue names must not be empty (--queue)")
        if len(self.queues) > MAX_WORKER_QUEUES:
            raise ConfigError(f"queues: at most {MAX_WORKER_QUEUES} (--queue)")
        if len(self.labels) > MAX_WORKER_LABELS or any(
            not k or len(k) > MAX_TAG_LEN or len(v) > MAX_TAG_LEN for k, v in self.labels.items()
        ):
            raise ConfigError(
                f"labels: at most {MAX_WORKER_LABELS}, keys 1 to {MAX_TAG_LEN} characters, values at most "
                f"{MAX_TAG_LEN} (--label)"
            )
        if self.kill_grace_s < 0:
            raise ConfigError(f"kill_grace_s: must be >= 0, got {self.kill_grace_s} (--kill-grace)")
        if self.shutdown_grace_s < 0:
            raise ConfigError(f"shutdown_grace_s: must be >= 0, got {self.shutdown_grace_s}")
        if self.output_tail_bytes < 0:
            raise ConfigError(f"output_tail_bytes: must be >= 0, got {self.output_tail_bytes}")
        if self.max_return_value_bytes < 0:
            raise ConfigError(f"max_return_value_bytes: must be >= 0, got {self.max_return_value_bytes}")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ConfigError("backoff: need 0 < backoff_initial_s <= backoff_max_s")


class _StreamStale(Exception):
    """The leader stopped answering heartbeats on an open stream."""


class _State(enum.Enum):
    RUNNING = "running"
    DRAINING = "draining"


@dataclass(eq=False)
class _Attempt:
    key: AttemptKey
    lease: worker_pb2.Lease
    runner: Runner
    ttl_s: float
    deadline: float  # clock.monotonic() seconds
    start_at: float = 0.0  # clock.monotonic() seconds: the lease's start is held until then
    # A held start waits for the leader to renew the lease with a heartbeat sent at most
    # _CONFIRM_AHEAD_S before the start (_await_confirmation).
    confirmed_at: float = float("-inf")  # clock.monotonic() of the latest renewing heartbeat's send
    confirm_waiter: asyncio.Future[None] | None = None
    task: asyncio.Task[None] | None = None
    revoked: bool = False  # the leader revoked the lease: kill, report nothing
    fenced: bool = False  # the local deadline passed: killed at once

    @property
    def renewable(self) -> bool:
        return not (self.revoked or self.fenced)


@dataclass(eq=False)
class _LiveOutput:
    """Output not yet flushed as OutputChunk messages."""

    key: AttemptKey
    token: common_pb2.FencingToken
    buffers: dict[worker_pb2.OutputStream.ValueType, bytearray] = field(default_factory=dict)
    finished: bool = False


class _Session:
    """One welcomed stream."""

    def __init__(
        self,
        call: grpc.aio.StreamStreamCall[worker_pb2.WorkerMessage, worker_pb2.GatewayMessage],
        welcome: worker_pb2.Welcome,
        address: str,
    ) -> None:
        self.call = call
        self.address = address
        self.leader_id = welcome.leader_id
        self.heartbeat_interval_s = (welcome.heartbeat_interval_ms or 0) / 1000 or _FALLBACK_HEARTBEAT_S
        self.lease_ttl_s = (welcome.lease_ttl_ms or 0) / 1000 or _FALLBACK_LEASE_TTL_S
        # Holding nothing, the worker heartbeats this often instead (the leader stretches it when
        # thousands of workers are connected; HeartbeatAck updates it).
        self.idle_interval_s = self.heartbeat_interval_s
        self.set_idle_interval(welcome.idle_heartbeat_interval_ms)
        # A heartbeat unanswered for this long means the stream is dead in practice: reconnect. It must
        # be well inside the TTL: a leader cut off by a partition sends no reset, and waiting a whole TTL
        # would let every running attempt hit its local deadline (self-fencing kills it, and the lease is
        # re-granted: a duplicate run) before the worker even tried the new leader (found by fault
        # scenario S4, leader partitioned).
        self.stale_after_s = min(max(1.5 * self.heartbeat_interval_s, 1.0), self.lease_ttl_s / 3)
        # Heartbeats sent and not yet answered, oldest first: (loop time, clock time, attempts listed).
        # The leader answers heartbeats in order, so each HeartbeatAck pairs with the oldest entry.
        self.heartbeats: deque[tuple[float, float, frozenset[AttemptKey]]] = deque()
        self.sent: dict[AttemptKey, float] = {}  # results sent on this stream -> loop time
        self.sent_by_execution: dict[str, set[AttemptKey]] = {}  # the same keys, by execution id
        # Send a complete listing in the next heartbeat: the first of every stream (a new leader needs one
        # at once to release the leases its predecessor granted and never delivered), and when asked.
        self.list_finished = True
        self._write_lock = asyncio.Lock()

    def set_idle_interval(self, ms: int) -> None:
        if ms > 0:
            self.idle_interval_s = max(self.heartbeat_interval_s, ms / 1000)

    def mark_sent(self, key: AttemptKey, now: float) -> None:
        self.sent[key] = now
        self.sent_by_execution.setdefault(key[0], set()).add(key)

    def sent_keys(self, execution_ids: set[str]) -> list[AttemptKey]:
        """The results sent on this stream for these executions (what an ack may remove)."""
        return [k for eid in execution_ids for k in self.sent_by_execution.get(eid, ())]

    def forget_sent(self, key: AttemptKey) -> None:
        self.sent.pop(key, None)
        keys = self.sent_by_execution.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.sent_by_execution[key[0]]

    async def write(self, message: worker_pb2.WorkerMessage) -> None:
        async with self._write_lock:
            await self.call.write(message)


class Worker:
    """A worker agent. `await run()` until `stop()`; one instance per process is the normal case.

    `handlers`: the registry of Python handlers; by default an empty one of this worker's own that falls
    back on the module-level `cronraft.client.handlers.registry`.
    """

    def __init__(
        self,
        config: WorkerConfig,
        *,
        clock: Clock | None = None,
        base_env: Mapping[str, str] | None = None,
        handlers: HandlerRegistry | None = None,
    ) -> None:
        self.config = config
        self.handlers = handlers if handlers is not None else HandlerRegistry(parent=_handlers.registry)
        self._clock: Clock = clock or SystemClock()
        self._base_env = base_env
        self._identity = process_identity(config.policy)
        self._log = _log.bind(worker_id=config.worker_id)
        self.outbox = Outbox(config.outbox_dir)
        self._volatile: dict[AttemptKey, common_pb2.AttemptResult] = {}  # results the outbox failed to store
        self._attempts: dict[AttemptKey, _Attempt] = {}
        self._running_executions: collections.Counter[str] = collections.Counter()  # ids in _attempts
        # Results stored since the results loop last looked (it sends these without rescanning the
        # whole outbox, which it does on a new stream and every `result_resend_s`).
        self._fresh: list[common_pb2.AttemptResult] = []
        # Results waiting for the outbox write; results that finish together share one write and fsync.
        self._to_store: list[tuple[common_pb2.AttemptResult, asyncio.Future[None]]] = []
        self._storing: asyncio.Task[None] | None = None
        self._live: dict[AttemptKey, _LiveOutput] = {}
        # Live outputs with something to flush or to forget (the output loop visits only these: a pass
        # over 10,000 held attempts every flush interval was a tenth of a busy worker's CPU).
        self._live_dirty: set[AttemptKey] = set()
        self._session: _Session | None = None
        self._state = _State.RUNNING
        self._stop_requested = asyncio.Event()
        self._hurry = asyncio.Event()
        self._results_ready = asyncio.Event()
        self._acked = asyncio.Event()
        self.connected = asyncio.Event()  # set while a welcomed stream is open
        self._heartbeat_now = asyncio.Event()  # send a heartbeat without waiting for the interval
        # Held starts wait at one gate per start instant (_start_gate), opened at the instant once a
        # heartbeat sent at most _CONFIRM_AHEAD_S before it was answered; `_acked_sent` is the clock
        # time the latest answered heartbeat was sent.
        self._gates: dict[int, asyncio.Future[None]] = {}
        self._gates_waiting: set[int] = set()
        self._acked_sent = float("-inf")
        # This process's incarnation (Hello.incarnation): a leader that finds it not holding a lease
        # granted to it knows the attempt never began, and grants it again without spending an attempt.
        self.incarnation = uuid.uuid4().hex
        self._idle_wait = False  # the heartbeat loop waits the idle interval (it held nothing)
        self._declining: set[asyncio.Task[None]] = set()  # offers declined while draining, being reported

    # -- public -----------------------------------------------------------------------------------

    def handler(self, name: str) -> Callable[[_H], _H]:
        """Decorator: register an (async or plain) function as this worker's handler `name`."""
        return self.handlers.handler(name)

    def stop(self, *, immediate: bool = False) -> None:
        """Stop taking leases; running attempts get `shutdown_grace_s` (none if `immediate`) to finish."""
        self._state = _State.DRAINING
        self._heartbeat_now.set()  # tell the leader at once: it offers a draining worker nothing more
        self._stop_requested.set()
        if immediate:
            self._hurry.set()

    @property
    def running(self) -> list[worker_pb2.Lease]:
        """Leases of the attempts still running."""
        return [a.lease for a in self._attempts.values()]

    async def run(self) -> None:
        self._log.info(
            "worker starting",
            servers=",".join(self.config.servers),
            capacity=self.config.capacity,
            queues=",".join(self.config.queues),
            outbox=str(self.config.outbox_dir),
            outbox_pending=len(self.outbox),
            handlers=",".join(self.handlers.names()),
            **self.config.policy.describe(),
        )
        if self._identity is None and os.geteuid() == 0:
            self._log.warning("running as root with no [run_as] in the policy: payloads run as root")
        if "shell" in self.config.policy.kinds:
            self._log.warning("shell payloads are enabled: any task can run any command on this worker")
        fence = asyncio.create_task(self._fence_loop(), name="fence")
        connection = asyncio.create_task(self._connection_loop(), name="connection")
        try:
            await self._stop_requested.wait()
            self._log.info("worker stopping", running=len(self._attempts))
            await self._drain()
        finally:
            for task in (connection, fence):
                task.cancel()
            await asyncio.gather(connection, fence, return_exceptions=True)
            # Cancelled from outside: leave no process behind.
            await self._kill_all(StopReason.SHUTDOWN, wait_s=self.config.kill_grace_s + 2)
        self._log.info("worker stopped", outbox_pending=len(self.outbox) + len(self._volatile))

    # -- shutdown ---------------------------------------------------------------------------------

    async def _wait_or_hurry(self, aws: set[asyncio.Task[None]], timeout: float) -> None:
        """Wait until every task in `aws` is done, `timeout` passes, or `stop(immediate=True)`."""
        if not aws or timeout <= 0 or self._hurry.is_set():
            return
        all_done = asyncio.ensure_future(asyncio.wait(aws))
        hurry = asyncio.ensure_future(self._hurry.wait())
        try:
            await asyncio.wait({all_done, hurry}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            all_done.cancel()
            hurry.cancel()
            await asyncio.gather(all_done, hurry, return_exceptions=True)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.shutdown_grace_s
        tasks = {a.task for a in self._attempts.values() if a.task is not None}
        await self._wait_or_hurry(tasks, self.config.shutdown_grace_s)
        await self._kill_all(StopReason.SHUTDOWN, wait_s=self.config.kill_grace_s + 2)
        # Give the leader a moment to acknowledge what was just sent; the outbox keeps the rest.
        ack_wait = min(1.0, max(0.0, deadline - loop.time()))
        while ack_wait > 0:
            self._acked.clear()  # before looking, so that an ack arriving meanwhile is not missed
            if not ((self.outbox.pending() or self._volatile) and self.connected.is_set()):
                break
            start = loop.time()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ack_wait):
                    await self._acked.wait()
            ack_wait -= loop.time() - start

    async def _kill_all(self, reason: StopReason, *, wait_s: float) -> None:
        tasks = set()
        for attempt in self._attempts.values():
            attempt.runner.stop(reason)
            if attempt.task is not None and not attempt.task.done():
                tasks.add(attempt.task)
        if tasks:
            self._log.warning("killing attempts still running", count=len(tasks), reason=reason.value)
            await asyncio.wait(tasks, timeout=wait_s)

    # -- connection -------------------------------------------------------------------------------

    async def _connection_loop(self) -> None:
        servers = self.config.servers
        index = 0
        backoff = self.config.backoff_initial_s
        hint: str | None = None
        failures = 0
        avoid: dict[str, float] = {}  # address -> loop time until which other nodes are tried first
        loop = asyncio.get_running_loop()
        while True:
            if hint and avoid.get(hint, 0.0) > loop.time():
                # A redirect to the node whose stream just went silent: the redirecting node has not
                # learnt of the election yet. Following it held the worker for the hello timeout on a
                # stopped leader while the new one, not hearing from it, expired its leases (an
                # unconfirmed held start reported late is a fire lost for at_most_once).
                self._log.debug("ignoring a redirect to a silent node", leader=hint)
                hint = None
            if hint:
                address, hint = hint, None
            else:
                address = servers[index % len(servers)]
                index += 1
                for _ in range(len(servers) - 1):
                    if avoid.get(address, 0.0) <= loop.time():
                        break
                    address = servers[index % len(servers)]
                    index += 1
            welcomed = False
            failure: dict[str, Any] | None = None
            try:
                hint, welcomed = await self._connect(address)
                if hint:
                    self._log.info("redirected to the leader", address=address, leader=hint)
            except grpc.aio.AioRpcError as exc:
                hint = _leader_hint(exc)
                failure = {"code": exc.code().name, "details": exc.details(), "leader": hint or ""}
            except (_StreamStale, asyncio.InvalidStateError, TimeoutError) as exc:
                failure = {"error": str(exc) or type(exc).__name__}
                if not isinstance(exc, asyncio.InvalidStateError):
                    avoid[address] = loop.time() + _AVOID_S  # silent, not refusing: likely partitioned
            except Exception:  # a bug must not leave the worker running without a stream
                self._log.exception("stream failed unexpectedly", address=address)
            if welcomed:
                backoff = self.config.backoff_initial_s
                failures = 0
            if failure is not None:
                # The first failure of a streak is worth a warning; the retries that follow are not.
                level = logging.WARNING if failures == 0 else logging.DEBUG
                self._log.log(level, "stream failed; retrying", address=address, **failure)
                failures += 1
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, self.config.backoff_max_s)

    async def _connect(self, address: str) -> tuple[str | None, bool]:
        """One stream to `address`; returns (leader address hint, whether it was welcomed)."""
        hello = worker_pb2.Hello(
            worker_id=self.config.worker_id,
            capacity=self.config.capacity,
            queues=list(self.config.queues),
            labels=dict(self.config.labels),
            sent_mono_ms=int(self._clock.monotonic() * 1000),
            incarnation=self.incarnation,
        )
        options = [("grpc.max_receive_message_length", CLIENT_MAX_RECEIVE_BYTES)]  # lease offers
        async with self.config.transport.aio_channel(address, options) as channel:
            stub = worker_pb2_grpc.WorkerGatewayStub(channel)
            call = stub.Connect()
            try:
                await call.write(worker_pb2.WorkerMessage(hello=hello))
                async with asyncio.timeout(_HELLO_TIMEOUT_S):
                    first = await call.read()
                if not isinstance(first, worker_pb2.GatewayMessage):  # EOF: ended without a status error
                    return None, False
                kind = first.WhichOneof("kind")
                if kind == "not_leader":
                    return first.not_leader.leader_address or None, False
                if kind != "welcome":
                    self._log.warning("expected Welcome first; reconnecting", address=address, got=kind)
                    return None, False
                session = _Session(call, first.welcome, address)
                self._session = session
                self.connected.set()
                self._log.info(
                    "connected",
                    address=address,
                    leader_id=session.leader_id,
                    heartbeat_interval_s=session.heartbeat_interval_s,
                    lease_ttl_s=session.lease_ttl_s,
                    outbox_pending=len(self.outbox),
                )
                try:
                    return await self._serve(session), True
                finally:
                    self._session = None
                    self.connected.clear()
                    self._drop_live_output()
            finally:
                call.cancel()

    def _drop_live_output(self) -> None:
        """Without a stream, live output has nowhere to go: forget what was buffered."""
        for key, live in list(self._live.items()):
            if live.finished:
                del self._live[key]
            else:
                live.buffers.clear()

    async def _serve(self, session: _Session) -> str | None:
        """Run the welcomed stream until it ends; returns a leader address hint if the leader moved."""
        self._results_ready.set()  # resend the whole outbox on every new stream
        reader = asyncio.create_task(self._read_loop(session), name="read")
        tasks = {
            reader,
            asyncio.create_task(self._heartbeat_loop(session), name="heartbeat"),
            asyncio.create_task(self._results_loop(session), name="results"),
            asyncio.create_task(self._output_loop(session), name="output"),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if task is not reader:
                task.result()  # re-raises the failure of a writer loop
        return reader.result() if reader in done else None

    # -- receiving --------------------------------------------------------------------------------

    async def _read_loop(self, session: _Session) -> str | None:
        while True:
            message = await session.call.read()
            if not isinstance(message, worker_pb2.GatewayMessage):  # EOF
                self._log.info("stream ended by the server", address=session.address)
                return None
            kind = message.WhichOneof("kind")
            if kind == "leases":
                for lease in message.leases.leases:
                    self._offer(session, lease, message.leases.echo_mono_ms)
            elif kind == "heartbeat_ack":
                self._on_heartbeat_ack(session, message.heartbeat_ack)
            elif kind == "acks":
                await self._on_result_acks(session, message.acks.execution_ids)
            elif kind == "cancel":
                self._on_cancel(message.cancel)
            elif kind == "not_leader":
                return message.not_leader.leader_address or None
            else:
                self._log.debug("ignored gateway message", kind=kind)

    def _offer(self, session: _Session, lease: worker_pb2.Lease, echo_ms: int = 0) -> None:
        key = attempt_key(lease.execution_id, lease.token)
        if self._state is _State.DRAINING:
            # Reported, not ignored: an ignored offer waited out its lease, and a lease that may have
            # begun ends at_most_once executions `lost` (issue 17). Nothing ran, so it is granted again.
            self._log.warning("shutting down: lease offer declined", execution_id=lease.execution_id)
            if key not in self.outbox and key not in self._volatile:
                declined = self._not_started(lease, "worker shutting down; not started")
                task = asyncio.create_task(self._report(declined), name=f"declined {lease.execution_id}")
                self._declining.add(task)
                task.add_done_callback(self._declining.discard)
            return
        if key in self._attempts or key in self.outbox or key in self._volatile:
            self._log.debug("duplicate lease offer ignored", execution_id=lease.execution_id)
            return
        failpoint("worker.lease_received_before_start")
        if self._running_executions[lease.execution_id]:
            self._log.warning(
                "another attempt of this execution is still running here",
                execution_id=lease.execution_id,
                token=f"{lease.token.term}.{lease.token.index}",
            )
        if len(self._attempts) >= self.config.capacity:
            self._log.warning(
                "lease offered beyond capacity; running it anyway",
                execution_id=lease.execution_id,
                running=len(self._attempts),
                capacity=self.config.capacity,
            )
        ttl_s = lease.lease_ttl_ms / 1000 if lease.lease_ttl_ms > 0 else session.lease_ttl_s
        live = _LiveOutput(key=key, token=lease.token)
        self._live[key] = live
        runner = self._runner_for(lease, functools.partial(self._on_output, live))
        received = self._clock.monotonic()
        # The lease's clock started at the leader after it had our message stamped `echo_ms` (a time of
        # our own clock): counting the TTL from there, never from a late receipt, keeps this deadline
        # before the leader's expiry however long the offer waited (a SIGSTOP, a slow link). Found by
        # fault scenario S8: an offer read after a 7 s pause ran beside its re-grant.
        deadline = received + ttl_s
        if echo_ms > 0:
            deadline = min(deadline, echo_ms / 1000 + ttl_s)
        attempt = _Attempt(
            key, lease, runner, ttl_s, deadline=deadline, start_at=received + lease.start_delay_ms / 1000
        )
        self._attempts[key] = attempt
        if self._idle_wait:
            self._heartbeat_now.set()  # renewals are due at the ordinary interval from now on
        self._running_executions[lease.execution_id] += 1
        attempt.task = asyncio.create_task(self._run_attempt(attempt), name=f"attempt {lease.execution_id}")
        self._log.debug("attempt started", execution_id=lease.execution_id, attempt=lease.attempt)

    def _runner_for(self, lease: worker_pb2.Lease, on_output: OutputSink) -> Runner:
        config = self.config
        kind = lease.payload.WhichOneof("kind")
        if kind in ("http", "handler"):
            work = (
                functools.partial(run_http, lease, policy=config.policy)
                if kind == "http"
                else functools.partial(self._call_handler, lease)
            )
            return InProcessRunner(
                lease,
                work,
                what="HTTP request" if kind == "http" else "handler",
                clock=self._clock,
                kill_grace_s=config.kill_grace_s,
                output_tail_bytes=config.output_tail_bytes,
                on_output=on_output,
            )
        return AttemptRunner(
            lease,
            clock=self._clock,
            kill_grace_s=config.kill_grace_s,
            output_tail_bytes=config.output_tail_bytes,
            on_output=on_output,
            base_env=self._base_env,
            policy=config.policy,
            identity=self._identity,
        )

    async def _call_handler(self, lease: worker_pb2.Lease, io: InProcessIO) -> WorkOutcome:
        return await run_handler(
            self.handlers, lease, io, max_return_value_bytes=self.config.max_return_value_bytes
        )

    def _on_heartbeat_ack(self, session: _Session, ack: worker_pb2.HeartbeatAck) -> None:
        session.set_idle_interval(ack.idle_heartbeat_interval_ms)
        if ack.list_finished:
            session.list_finished = True
        sent: tuple[float, float, frozenset[AttemptKey]] | None = None
        if session.heartbeats:
            sent = session.heartbeats.popleft()
        for execution_id in ack.revoked:
            keys = (
                [k for k in sent[2] if k[0] == execution_id]
                if sent is not None
                else [k for k in self._attempts if k[0] == execution_id]
            )
            for key in keys:
                attempt = self._attempts.get(key)
                if attempt is not None and not attempt.revoked:
                    attempt.revoked = True
                    attempt.runner.stop(StopReason.REVOKED)
                    self._log.warning(
                        "lease revoked by the leader; killing attempt", execution_id=execution_id
                    )
        if sent is None:
            return  # an answer to no heartbeat: we cannot know from when to renew
        renewed = set(ack.renewed)
        for key in sent[2]:
            attempt = self._attempts.get(key)
            if key[0] in renewed and attempt is not None and attempt.renewable:
                attempt.deadline = max(attempt.deadline, sent[1] + attempt.ttl_s)
                attempt.confirmed_at = max(attempt.confirmed_at, sent[1])
                waiter = attempt.confirm_waiter
                if (
                    waiter is not None
                    and not waiter.done()
                    and attempt.confirmed_at >= attempt.start_at - _CONFIRM_AHEAD_S
                ):
                    waiter.set_result(None)
        self._acked_sent = max(self._acked_sent, sent[1])
        if self._gates_waiting:
            self._open_waiting_gates()

    async def _on_result_acks(self, session: _Session, execution_ids: Sequence[str]) -> None:
        # Only what was sent on this stream: a newer result of the same execution must not be dropped.
        keys = session.sent_keys(set(execution_ids))
        if not keys:
            return
        await asyncio.to_thread(self.outbox.remove, keys)
        for key in keys:  # only now: until removed, the results loop must not see them as unsent
            session.forget_sent(key)
            self._volatile.pop(key, None)
        self._acked.set()

    def _on_cancel(self, cancel: worker_pb2.CancelAttempt) -> None:
        key = attempt_key(cancel.execution_id, cancel.token)
        targets = [self._attempts[key]] if key in self._attempts else []
        if not targets and not cancel.HasField("token"):
            targets = [a for k, a in self._attempts.items() if k[0] == cancel.execution_id]
        for attempt in targets:
            attempt.runner.stop(StopReason.CANCELLED)
        if not targets:
            self._log.debug("cancel for no running attempt", execution_id=cancel.execution_id)

    # -- attempts ---------------------------------------------------------------------------------

    def _on_output(self, live: _LiveOutput, stream: worker_pb2.OutputStream.ValueType, data: bytes) -> None:
        if self._session is None:
            return  # live output is best effort; the result carries the tails
        buf = live.buffers.setdefault(stream, bytearray())
        buf += data
        self._live_dirty.add(live.key)
        excess = len(buf) - _MAX_LIVE_OUTPUT_BYTES
        if excess > 0:
            del buf[:excess]

    async def _run_attempt(self, attempt: _Attempt) -> None:
        execution_id = attempt.lease.execution_id
        began = False
        try:
            try:
                waited = self._refused(attempt.lease)
                if waited is None:
                    waited = await self._await_start(attempt)
                if waited is None and attempt.lease.HasField("sensor"):
                    waited = await self._await_sensor(attempt)
                if waited is None:
                    began = True
                result = waited if waited is not None else await attempt.runner.run()
                if result.outcome == common_pb2.ATTEMPT_REFUSED and not result.error.startswith("refused"):
                    # Refused while starting (an address, a secret gone since the check): say by whom.
                    result.error = f"refused by worker {self.config.worker_id}: {result.error}"
            except Exception as exc:  # a bug of ours: report it rather than lose the attempt
                self._log.exception("attempt runner failed", execution_id=execution_id)
                result = self._not_started(attempt.lease, f"worker error before the start: {exc!r}")
                if began:
                    result = common_pb2.AttemptResult(
                        execution_id=execution_id,
                        token=attempt.lease.token,
                        outcome=common_pb2.ATTEMPT_FAILED,
                        exit_code=126,
                        finished_at_ms=self._clock.wall_ms(),
                        error=f"worker error: {exc!r}",
                    )
            if attempt.revoked:
                self._log.info("revoked attempt killed; no result reported", execution_id=execution_id)
                return
            failpoint("worker.after_finish_before_report")
            try:
                await self._store(result)
            except OSError as exc:
                # Not durable, but still delivered if the stream holds: better than dropping it.
                self._log.error(
                    "outbox write failed; result kept in memory", execution_id=execution_id, error=str(exc)
                )
                self._volatile[attempt.key] = result
            self._fresh.append(result)
            failpoint("worker.after_outbox_before_send")
            self._log.debug(
                "attempt finished",
                execution_id=execution_id,
                outcome=common_pb2.AttemptOutcome.Name(result.outcome),
                exit_code=result.exit_code,
            )
            self._results_ready.set()
        finally:
            if self._attempts.pop(attempt.key, None) is not None:
                self._running_executions[execution_id] -= 1
                if self._running_executions[execution_id] <= 0:
                    del self._running_executions[execution_id]
            live = self._live.get(attempt.key)
            if live is not None:
                live.finished = True
                if self._session is None:
                    del self._live[attempt.key]
                else:
                    self._live_dirty.add(attempt.key)

    async def _report(self, result: common_pb2.AttemptResult) -> None:
        """Store and send a result made without an attempt task (a declined offer)."""
        try:
            await self._store(result)
        except OSError:
            self._volatile[result_key(result)] = result
        self._fresh.append(result)
        self._results_ready.set()

    async def _store(self, result: common_pb2.AttemptResult) -> None:
        """Durably store `result` in the outbox (OSError if that failed). Results finishing while a write
        is in progress wait for the next one and share it: one batch file, one fsync pair."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._to_store.append((result, future))
        if self._storing is None or self._storing.done():
            self._storing = asyncio.create_task(self._store_loop(), name="outbox")
        await future

    async def _store_loop(self) -> None:
        while self._to_store:
            batch, self._to_store = self._to_store, []
            try:
                await asyncio.to_thread(self.outbox.put_many, [result for result, _ in batch])
            except OSError as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)

    async def _await_start(self, attempt: _Attempt) -> common_pb2.AttemptResult | None:
        """Hold a lease granted ahead of its due time until then (None: start now). A cancel, revoke,
        self-fence or shutdown meanwhile ends the attempt unstarted (ATTEMPT_NOT_STARTED)."""
        runner = attempt.runner
        lease = attempt.lease
        if lease.start_delay_ms > 0 or lease.start_at_ms > 0:
            # Granted ahead: started only once confirmed (_await_confirmation), even if the offer was
            # written after its due time (no delay left). The leader counts on that: a held lease it never
            # confirmed cannot have begun, so its expiry grants it again without spending an attempt.
            stopped = False
            if lease.start_delay_ms > 0:
                # Every start of the instant waits at one gate, and wakes once: when 10,000 held starts
                # each woke at the instant, found the confirmation not yet read and waited again, the
                # heartbeat answer queued behind those wake-ups (W1: starts 0.3-1.5 s after the instant).
                gate = self._start_gate(attempt.start_at)
                stopped = await runner.hold(attempt.deadline - self._clock.monotonic(), until=gate)
                stopped = stopped or await runner.hold(attempt.start_at - self._clock.monotonic())
            confirmed = stopped or await self._await_confirmation(attempt)
        else:
            confirmed = True
        if runner.stop_reason is None:
            if confirmed and self._clock.monotonic() < attempt.deadline:
                return None
            # Unconfirmed at its deadline, or the lease ran out before the start (during the hold, or
            # before the offer was even read) and the fence loop has not run yet: after a pause
            # (SIGSTOP) they all wake together, and a start now would run beside the attempt the leader
            # has re-granted elsewhere (found by fault scenario S8). Fence it unstarted.
            attempt.fenced = True
            runner.stop(StopReason.FENCED)
        reason = runner.stop_reason
        assert reason is not None
        return self._not_started(attempt.lease, stop_result(reason, lease, "not started")[1])

    def _refused(self, lease: worker_pb2.Lease) -> common_pb2.AttemptResult | None:
        """The result of a lease this worker's policy refuses (nothing starts), or None."""
        environ = os.environ if self._base_env is None else self._base_env
        refusal = self.config.policy.refusal(lease, environ)
        if refusal is None:
            return None
        self._log.warning("lease refused by the policy", execution_id=lease.execution_id, reason=refusal)
        return common_pb2.AttemptResult(
            execution_id=lease.execution_id,
            token=lease.token,
            outcome=common_pb2.ATTEMPT_REFUSED,
            exit_code=-1,
            finished_at_ms=self._clock.wall_ms(),
            error=f"refused by worker {self.config.worker_id}: {refusal}",
        )

    def _not_started(self, lease: worker_pb2.Lease, error: str) -> common_pb2.AttemptResult:
        """The result of an attempt that ended before its payload began: nothing ran, so the cluster
        grants the execution again instead of ending it (a cancel asked for ends it cancelled)."""
        return common_pb2.AttemptResult(
            execution_id=lease.execution_id,
            token=lease.token,
            outcome=common_pb2.ATTEMPT_NOT_STARTED,
            finished_at_ms=self._clock.wall_ms(),
            error=error,
        )

    def _start_gate(self, start_at: float) -> asyncio.Future[None]:
        """The gate of the starts due at `start_at` (rounded up to _GATE_S). A new gate asks for the
        confirming heartbeat _CONFIRM_AHEAD_S before its instant and opens at the instant if it has
        been answered, else when it is (_on_heartbeat_ack)."""
        key = math.ceil(start_at / _GATE_S)
        gate = self._gates.get(key)
        if gate is None:
            loop = asyncio.get_running_loop()
            gate = self._gates[key] = loop.create_future()
            wait = key * _GATE_S - self._clock.monotonic()
            loop.call_later(max(0.0, wait - _CONFIRM_AHEAD_S), self._heartbeat_now.set)
            loop.call_later(max(0.0, wait), self._open_gate, key)
        return gate

    def _open_gate(self, key: int) -> None:
        gate = self._gates.get(key)
        if gate is None:
            return
        if self._acked_sent >= key * _GATE_S - _CONFIRM_AHEAD_S or gate.done():
            del self._gates[key]
            if not gate.done():
                gate.set_result(None)
        else:
            self._gates_waiting.add(key)
            self._heartbeat_now.set()

    def _open_waiting_gates(self) -> None:
        for key in [k for k in self._gates_waiting if self._acked_sent >= k * _GATE_S - _CONFIRM_AHEAD_S]:
            self._gates_waiting.discard(key)
            self._open_gate(key)

    async def _await_confirmation(self, attempt: _Attempt) -> bool:
        """A lease held for its due time starts only once the leader has renewed it with a heartbeat sent
        at most _CONFIRM_AHEAD_S before the start. A worker cut off from the leader meanwhile would
        otherwise start an attempt it cannot renew: self-fencing kills it and the leader grants it
        again, a duplicate (fault scenario S6 counted 48 where there were 19 before fire ahead).
        Unconfirmed at the lease's deadline, it is fenced unstarted: late, but run once. The confirming
        heartbeat was asked for _CONFIRM_AHEAD_S before the start (_offer), so its answer is normally
        here already. True once confirmed; False if stopped or still unconfirmed at the deadline."""
        if attempt.confirmed_at >= attempt.start_at - _CONFIRM_AHEAD_S:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        attempt.confirm_waiter = waiter
        self._heartbeat_now.set()
        stopped = await attempt.runner.hold(attempt.deadline - self._clock.monotonic(), until=waiter)
        attempt.confirm_waiter = None
        return not stopped and waiter.done()

    async def _await_sensor(self, attempt: _Attempt) -> common_pb2.AttemptResult | None:
        """Run the lease's sensor probe every interval until it succeeds (None: go on with the payload)
        or its timeout passes (the attempt's failed result). The lease is held and renewed meanwhile;
        a cancel, revoke or self-fence stops the probing like it stops a payload."""
        lease = attempt.lease
        sensor = lease.sensor
        interval_s = (sensor.interval_ms or 10_000) / 1000
        timeout_ms = sensor.timeout_ms or 3_600_000
        deadline = self._clock.monotonic() + timeout_ms / 1000
        main = attempt.runner
        probes, last = 0, ""
        try:
            while True:
                probes += 1
                probe = worker_pb2.Lease()
                probe.CopyFrom(lease)
                probe.payload.CopyFrom(sensor.probe)
                probe.ClearField("sensor")
                remaining_ms = max(1, int((deadline - self._clock.monotonic()) * 1000))
                probe.timeout_ms = min(remaining_ms, lease.timeout_ms or remaining_ms)
                runner = self._runner_for(probe, lambda stream, data: None)
                attempt.runner = runner
                result = await runner.run()
                if runner.stop_reason is not None and runner.stop_reason is not StopReason.TIMEOUT:
                    # Stopped while its sensor probed: the payload itself never began.
                    return self._not_started(attempt.lease, f"while waiting for its sensor: {result.error}")
                if result.outcome == common_pb2.ATTEMPT_SUCCEEDED:
                    self._log.debug("sensor satisfied", execution_id=lease.execution_id, probes=probes)
                    return None
                if result.outcome == common_pb2.ATTEMPT_REFUSED:
                    return result  # it would be refused at every probe: final
                last = result.error or f"exit code {result.exit_code}"
                if self._clock.monotonic() + interval_s >= deadline:
                    result.outcome = common_pb2.ATTEMPT_FAILED
                    result.error = (
                        f"sensor not satisfied after {probes} probes in {timeout_ms} ms (last: {last})"
                    )
                    return result
                # The polling interval, cut short by a stop (the attempt's runner is this probe's until
                # the next one: a cancel or fence now used to wait out the whole interval).
                if await runner.hold(interval_s):  # stopped between two probes
                    # hold() is True only once a stop set the reason (mypy keeps the narrowing above).
                    reason = cast(StopReason, runner.stop_reason)
                    error = stop_result(reason, lease, "sensor stopped")[1]
                    return self._not_started(attempt.lease, f"while waiting for its sensor: {error}")
        finally:
            attempt.runner = main

    async def _fence_loop(self) -> None:
        """Self-fencing (I5): kill every attempt whose lease was not renewed before its local deadline."""
        while True:
            now = self._clock.monotonic()
            for attempt in list(self._attempts.values()):
                # Also a revoked attempt still dying within its kill grace: no process outlives its lease.
                if now >= attempt.deadline and not attempt.fenced:
                    attempt.fenced = True
                    self._log.warning(
                        "lease not renewed before its deadline; killing attempt",
                        execution_id=attempt.lease.execution_id,
                        overdue_s=round(now - attempt.deadline, 3),
                    )
                    attempt.runner.stop(StopReason.FENCED)
            await asyncio.sleep(self.config.fence_check_interval_s)

    # -- sending ----------------------------------------------------------------------------------

    async def _heartbeat_loop(self, session: _Session) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if session.heartbeats and loop.time() - session.heartbeats[0][0] > session.stale_after_s:
                raise _StreamStale(f"no heartbeat answer for {session.stale_after_s:.1f} s")
            self._heartbeat_now.clear()  # this heartbeat answers every request made before it
            listed = [a for a in self._attempts.values() if a.renewable]
            keys = frozenset(a.key for a in listed)
            refs = [
                worker_pb2.LeaseRef(execution_id=a.lease.execution_id, token=a.lease.token) for a in listed
            ]
            sent = self._clock.monotonic()
            session.heartbeats.append((loop.time(), sent, keys))
            heartbeat = worker_pb2.Heartbeat(
                leases=refs, sent_mono_ms=int(sent * 1000), draining=self._state is _State.DRAINING
            )
            if session.list_finished:
                # Finished attempts whose results are not acknowledged (durable or not): with the running
                # ones, everything this worker holds. Attempts still storing their result are running.
                session.list_finished = False
                heartbeat.complete_listing = True
                for result in [*self.outbox.pending(), *self._volatile.values()]:
                    heartbeat.finished.add(execution_id=result.execution_id, token=result.token)
            await session.write(worker_pb2.WorkerMessage(heartbeat=heartbeat))
            # The interval, or less when a held start asks for a confirming heartbeat; the idle interval
            # when this worker holds nothing (a lease arriving meanwhile ends the wait: _start_attempt).
            holding = bool(self._attempts or self._volatile or len(self.outbox))
            self._idle_wait = not holding
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._heartbeat_now.wait(),
                        session.heartbeat_interval_s if holding else session.idle_interval_s,
                    )
            finally:
                self._idle_wait = False

    async def _results_loop(self, session: _Session) -> None:
        loop = asyncio.get_running_loop()
        resend = self.config.result_resend_s
        rescan_at = loop.time()  # a new stream sends the whole outbox
        while True:
            self._results_ready.clear()
            now = loop.time()
            if now >= rescan_at:
                # Everything unacknowledged (and not sent on this stream within `resend`); the fresh
                # list is a subset of it.
                self._fresh.clear()
                pending = [*self.outbox.pending(), *self._volatile.values()]
                rescan_at = now + resend
            else:
                pending, self._fresh = self._fresh, []
            batch: list[common_pb2.AttemptResult] = []
            size = 0
            for result in pending:
                key = result_key(result)
                sent_at = session.sent.get(key)
                if sent_at is not None and now - sent_at < resend:
                    continue
                if batch and (
                    size + result.ByteSize() > _MAX_RESULTS_MESSAGE_BYTES
                    or len(batch) >= _MAX_RESULTS_PER_MESSAGE
                ):
                    await self._send_results(session, batch)
                    batch, size = [], 0
                batch.append(result)
                size += result.ByteSize()
                session.mark_sent(key, now)
            if batch:
                await self._send_results(session, batch)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, rescan_at - loop.time())):
                    await self._results_ready.wait()

    async def _send_results(self, session: _Session, batch: list[common_pb2.AttemptResult]) -> None:
        await session.write(worker_pb2.WorkerMessage(results=worker_pb2.Results(results=batch)))
        self._log.debug("results sent", count=len(batch))

    async def _output_loop(self, session: _Session) -> None:
        while True:
            await asyncio.sleep(self.config.output_flush_interval_s)
            dirty, self._live_dirty = self._live_dirty, set()
            for key in dirty:
                live = self._live.get(key)
                if live is None:
                    continue
                for stream, buf in list(live.buffers.items()):  # grows while we await
                    if buf:
                        chunk = worker_pb2.OutputChunk(
                            execution_id=key[0], token=live.token, stream=stream, data=bytes(buf)
                        )
                        buf.clear()
                        await session.write(worker_pb2.WorkerMessage(output=chunk))
                if live.finished:
                    del self._live[key]


def _leader_hint(exc: grpc.aio.AioRpcError) -> str | None:
    for key, value in exc.trailing_metadata() or ():
        if key == LEADER_METADATA_KEY:
            text = value.decode() if isinstance(value, bytes) else str(value)
            return text or None
    return None


# -- command line ---------------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """'500ms', '5s', '2m', '1h' or a plain number of seconds -> seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 500ms, 5s, 2m")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _parse_label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"invalid label {text!r}: use KEY=VALUE")
    return key, value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="schedworker",
        description="Cronraft worker: runs the attempts the leader leases to it.",
    )
    parser.add_argument(
        "--server",
        action="append",
        metavar="HOST:PORT[,HOST:PORT...]",
        help=f"cluster node(s) to connect to (default: $CRONRAFT_SERVER or {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--id",
        dest="worker_id",
        help="worker id (default: HOSTNAME-PID; set it to keep the same outbox across restarts)",
    )
    parser.add_argument("--capacity", type=_positive_int, default=4, help="attempts run at once (default 4)")
    parser.add_argument(
        "--queue", dest="queues", action="append", metavar="Q", help="queue to take work from (repeatable)"
    )
    # --worker-label, the flag `schedctl task create` requires labels with (one name on both, issue 19).
    label = parser.add_argument(
        "--worker-label",
        dest="labels",
        action="append",
        type=_parse_label,
        metavar=_argnames.KEY_VALUE,
        help="a label of this worker, which tasks can require (repeatable)",
    )
    _argnames.add_alias(parser, "--label", label)
    parser.add_argument(
        "--outbox-dir", type=Path, help="durable result outbox (default ./data/worker-<id>/outbox)"
    )
    parser.add_argument(
        "--kill-grace",
        type=parse_duration,
        default=DEFAULT_KILL_GRACE_S,
        metavar="DURATION",
        help="time between SIGTERM and SIGKILL when an attempt is stopped (default 5s)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=parse_duration,
        default=10.0,
        metavar="DURATION",
        help="on SIGTERM/SIGINT, how long running attempts may continue before they are killed (default 10s)",
    )
    parser.add_argument(
        "--handlers",
        dest="handler_modules",
        action="append",
        metavar="MODULE",
        help="import MODULE, whose @cronraft.client.handlers.handler functions this worker then serves "
        "(repeatable; the current directory is on the import path)",
    )
    parser.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="the worker's policy (TOML): payload kinds, executables, environment, run_as, limits, HTTP "
        "egress, secrets (docs/operations.md, 'Worker policy'); default: the secure defaults",
    )
    parser.add_argument(
        "--allow-shell",
        action="store_true",
        help="also run shell payloads (off by default: a shell payload runs whatever its task says)",
    )
    parser.add_argument(
        "--allow-http-loopback",
        action="store_true",
        help="let HTTP payloads reach loopback addresses (127.0.0.0/8, ::1); refused by default",
    )
    parser.add_argument("--log-format", choices=["console", "json"], default="console")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    add_transport_arguments(parser)
    return parser


def config_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> WorkerConfig:
    env = os.environ if environ is None else environ
    raw_servers = args.server or [env.get("CRONRAFT_SERVER") or DEFAULT_SERVER]
    servers = tuple(s.strip() for item in raw_servers for s in item.split(",") if s.strip())
    worker_id = args.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    outbox_dir = args.outbox_dir or Path("data") / f"worker-{worker_id}" / "outbox"
    return WorkerConfig(
        servers=servers,
        worker_id=worker_id,
        outbox_dir=outbox_dir,
        capacity=args.capacity,
        queues=tuple(args.queues or ("default",)),
        labels=dict(args.labels or ()),
        kill_grace_s=args.kill_grace,
        shutdown_grace_s=args.shutdown_grace,
        policy=policy_from_args(args),
        transport=transport_from_args(args, env),
    )


def policy_from_args(args: argparse.Namespace) -> WorkerPolicy:
    """--policy FILE (or the defaults), with what --allow-shell and --allow-http-loopback add."""
    path = getattr(args, "policy", None)
    policy = load_policy(path) if path is not None else WorkerPolicy()
    if getattr(args, "allow_shell", False):
        policy = dataclasses.replace(policy, kinds=policy.kinds | {"shell"})
    if getattr(args, "allow_http_loopback", False):
        policy = dataclasses.replace(policy, http=dataclasses.replace(policy.http, allow_loopback=True))
    return policy


def process_identity(policy: WorkerPolicy) -> ProcessIdentity | None:
    """Who process payloads run as: the policy's run_as user and group (ConfigError when unknown, or
    when the worker is not root and they are not its own); None: as the worker itself."""
    import grp
    import pwd

    if policy.run_as_user is None:
        return None
    name = policy.run_as_user
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, OverflowError):
        raise ConfigError(f"{policy.source}: run_as.user: no user {name!r} on this machine") from None
    gid = entry.pw_gid
    if policy.run_as_group is not None:
        group = policy.run_as_group
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
        except (KeyError, OverflowError):
            raise ConfigError(f"{policy.source}: run_as.group: no group {group!r} on this machine") from None
    if os.geteuid() != 0:
        if (entry.pw_uid, gid) == (os.geteuid(), os.getegid()):
            return None  # already that user
        raise ConfigError(
            f"{policy.source}: run_as: the worker runs as uid {os.geteuid()}, not root: it cannot switch "
            f"to {name!r}; start it as root, or remove [run_as]"
        )
    env = {"HOME": entry.pw_dir, "USER": entry.pw_name, "LOGNAME": entry.pw_name}
    return ProcessIdentity(uid=entry.pw_uid, gid=gid, env=env)


def configure_logging(log_format: str, level: str = "info") -> None:
    """structlog to stderr, human-readable or one JSON object per line."""
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if log_format == "json":
        processors += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    else:
        processors += [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


async def _amain(config: WorkerConfig) -> None:
    worker = Worker(config)
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        worker.stop(immediate=signals > 1)  # a second signal skips the grace

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    await worker.run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_format, args.log_level)
    try:
        config = config_from_args(args)
        process_identity(config.policy)  # an unknown run_as user is a start-up error, not an attempt's
    except (ConfigError, InvalidArgument) as exc:  # InvalidArgument: the transport flags
        parser.error(str(exc))
    try:
        _handlers.import_handler_modules(args.handler_modules or ())
    except Exception as exc:  # ImportError, or whatever the module raised while loading
        parser.error(f"--handlers: cannot import handlers: {type(exc).__name__}: {exc}")
    # A busy worker keeps thousands of attempts alive (tasks, futures, leases, buffers); with CPython's
    # default thresholds the cyclic GC walks them all every few thousand allocations. Measured with
    # 10,000 concurrent no-op handler attempts: 90-100 -> 46-51 us of CPU per attempt. What startup
    # allocated is frozen (never scanned again), and collections run about 70 times less often.
    gc.freeze()
    gc.set_threshold(_GC_THRESHOLD, 20, 20)
    # The stock asyncio loop, not uvloop: uvloop spawns children with fork(), and a fork() while
    # gRPC's threads run crashed payload children with SIGSEGV before exec (seen as exit 139).
    # CPython's subprocess uses vfork()/exec on Linux, which does not run gRPC's fork handlers.
    with asyncio.Runner() as runner:
        runner.run(_amain(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
