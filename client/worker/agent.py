"""The worker agent (`Worker`): one `WorkerGateway.Connect` stream to the leader at a time, the attempts
it is offered, and the loops of a stream (reading, heartbeats, results, live output).

The parts live beside it: where the stream goes (`routing`), one welcomed stream (`session`), its
heartbeats and their answers (`heartbeats`), lease deadlines and self-fencing (`leases`), what must hold
before a payload begins (`start_gate`), results and the durable outbox (`results`, `outbox`), live output
(`live_output`), the runner for each payload kind (`payloads`).

Python 3.11's `asyncio.wait_for` can swallow a cancellation that races with completion (CPython
gh-86296, fixed in 3.12), which would leave a cancelled loop running: this package uses
`asyncio.timeout` instead.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import functools
import logging
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

# types-grpcio is not in the dev dependencies yet: without it grpc is untyped (Any), with it the ignore
# is unused; `unused-ignore` keeps mypy strict quiet in both cases.
import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]
import structlog

from cronraft import __version__ as CRONRAFT_VERSION
from cronraft.bounds import CLIENT_MAX_RECEIVE_BYTES
from cronraft.client import handlers as _handlers
from cronraft.client._runner import (
    StopReason,
)
from cronraft.client.handlers import Handler, HandlerRegistry
from cronraft.client.worker import leases
from cronraft.client.worker.config import WorkerConfig, process_identity
from cronraft.client.worker.heartbeats import Heartbeats
from cronraft.client.worker.leases import Attempt
from cronraft.client.worker.live_output import LiveOutput
from cronraft.client.worker.metrics import WorkerMetrics
from cronraft.client.worker.outbox import AttemptKey, Outbox, attempt_key, result_key
from cronraft.client.worker.payloads import Runners
from cronraft.client.worker.results import Results, not_started
from cronraft.client.worker.routing import ServerRotation, leader_hint, stream_backoff
from cronraft.client.worker.session import Session, StreamStale, open_stream
from cronraft.client.worker.start_gate import StartGates, await_sensor, refusal
from cronraft.client.worker.ticks import sleep_to_tick
from cronraft.clock import Clock, SystemClock, mono_s
from cronraft.failpoint import failpoint
from cronraft.proto.v1 import common_pb2, worker_pb2, worker_pb2_grpc

_log = structlog.get_logger("cronraft.client.worker")
_H = TypeVar("_H", bound=Handler)

_HELLO_TIMEOUT_S = 3.0  # short: a node behind a partition must not hold the worker for a lease TTL
_ACK_WAIT_S = 1.0  # at the end of a drain: the most we wait for the leader to acknowledge our results

# What this worker does that a release before the feature gate's did not (raft.features.WORKER_FEATURES,
# which the client may not import): it hands a payload's result file back.
WORKER_FEATURES = ("results",)


# AttemptOutcome.Name without its cost, for the debug line of every attempt.
_OUTCOME_NAMES = {number: name for name, number in common_pb2.AttemptOutcome.items()}


def _logs_debug(log: Any) -> bool:
    """Whether `log` writes debug lines. A filtered call is a no-op, but its arguments are still
    computed (protobuf reads, the outcome's name): the lines of every attempt ask first. A bound logger's
    level is fixed when it is made (Worker.__init__ binds it)."""
    enabled = getattr(log, "is_enabled_for", None)
    return True if enabled is None else bool(enabled(logging.DEBUG))


class _State(enum.Enum):
    RUNNING = "running"
    DRAINING = "draining"


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
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.config = config
        # Prometheus metrics (client.worker.metrics, --metrics-address): told of starts and ends here,
        # the rest read from this worker at scrape time.
        self._metrics = metrics
        if metrics is not None:
            metrics.bind(self)
        self.handlers = handlers if handlers is not None else HandlerRegistry(parent=_handlers.registry)
        self._clock: Clock = clock or SystemClock()
        self._base_env = base_env
        self._identity = process_identity(config.policy)
        self._runners = Runners(
            config, self._clock, base_env=base_env, identity=self._identity, handlers=lambda: self.handlers
        )
        self._log = _log.bind(worker_id=config.worker_id)
        self._debug = _logs_debug(self._log)
        self.outbox = Outbox(config.outbox_dir)
        self._results = Results(self.outbox, config.result_resend_s, self._log)
        self._attempts: dict[AttemptKey, Attempt] = {}
        self._running_executions: collections.Counter[str] = collections.Counter()  # ids in _attempts
        self._session: Session | None = None
        self._live = LiveOutput(lambda: self._session is not None, config.output_flush_interval_s)
        self._state = _State.RUNNING
        self._stop_requested = asyncio.Event()
        self._hurry = asyncio.Event()
        self.connected = asyncio.Event()  # set while a welcomed stream is open
        self._heartbeat_now = asyncio.Event()  # send a heartbeat without waiting for the interval
        self._gates = StartGates(self._clock, self._heartbeat_now.set)
        self._heartbeats = Heartbeats(
            attempts=self._attempts,
            results=self._results,
            outbox=self.outbox,
            clock=self._clock,
            now=self._heartbeat_now,
            gates=self._gates,
            draining=lambda: self._state is _State.DRAINING,
            log=self._log,
        )
        self._held = self._heartbeats.held  # what confirming heartbeats list
        # This process's incarnation (Hello.incarnation): a leader that finds it not holding a lease
        # granted to it knows the attempt never began, and grants it again without spending an attempt.
        self.incarnation = uuid.uuid4().hex
        self._declining: set[asyncio.Task[None]] = set()  # offers declined while draining, being reported
        # No attempt's deadline comes before this (the fence loop's next pass; offers may bring it nearer).
        self._fence_due = 0.0

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

    @property
    def attempts_running(self) -> int:
        """Attempts held now (read by the metrics from another thread: a count, never an iteration)."""
        return len(self._attempts)

    @property
    def results_sent(self) -> int:
        return self._results.sent

    @property
    def results_acknowledged(self) -> int:
        return self._results.acknowledged

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
            self._runners.result_files.close()
            self.outbox.close()
        self._log.info("worker stopped", outbox_pending=len(self.outbox) + len(self._results.volatile))

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
        tasks = {a.task for a in self._attempts.values() if a.task is not None}
        await self._wait_or_hurry(tasks, self.config.shutdown_grace_s)
        await self._kill_all(StopReason.SHUTDOWN, wait_s=self.config.kill_grace_s + 2)
        await self._results.stored()  # an attempt's task ends before its result is in the outbox
        # Give the leader a moment to acknowledge what was just sent; the outbox keeps the rest. Not
        # taken from the grace: the attempts killed at its end have results too, and a result left in the
        # outbox is delivered only if this id comes back before the lease expires (else run again).
        ack_wait = _ACK_WAIT_S
        while ack_wait > 0:
            self._results.acked.clear()  # before looking, so that an ack arriving meanwhile is not missed
            if not ((self.outbox.pending() or self._results.volatile) and self.connected.is_set()):
                break
            start = loop.time()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ack_wait):
                    await self._results.acked.wait()
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
        servers = ServerRotation(self.config.servers, self._log)
        backoff = stream_backoff(self.config.backoff_initial_s, self.config.backoff_max_s)
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            address = servers.next(loop.time())
            welcomed = False
            failure: dict[str, Any] | None = None
            try:
                servers.hint, welcomed = await self._connect(address, servers.reachable(loop.time()))
                if servers.hint:
                    self._log.info("redirected to the leader", address=address, leader=servers.hint)
            except grpc.aio.AioRpcError as exc:
                servers.hint = leader_hint(exc)
                failure = {"code": exc.code().name, "details": exc.details(), "leader": servers.hint or ""}
                if exc.code() == grpc.StatusCode.UNAVAILABLE and not servers.hint:
                    # Gone or unreachable (a killed leader's stream breaks so): try the others first,
                    # rather than coming back to it after the next backoff.
                    servers.avoid(address, loop.time())
            except (StreamStale, asyncio.InvalidStateError, TimeoutError) as exc:
                failure = {"error": str(exc) or type(exc).__name__}
                if not isinstance(exc, asyncio.InvalidStateError):
                    servers.avoid(address, loop.time())  # silent, not refusing: likely partitioned
            except Exception:  # a bug must not leave the worker running without a stream
                self._log.exception("stream failed unexpectedly", address=address)
            if welcomed:
                backoff = stream_backoff(self.config.backoff_initial_s, self.config.backoff_max_s)
                failures = 0
            if failure is not None:
                # The first failure of a streak is worth a warning; the retries that follow are not.
                level = logging.WARNING if failures == 0 else logging.DEBUG
                self._log.log(level, "stream failed; retrying", address=address, **failure)
                failures += 1
            if servers.follow_at_once():
                continue
            await asyncio.sleep(backoff.next())

    async def _connect(self, address: str, direct: Sequence[str] = ()) -> tuple[str | None, bool]:
        """One stream to `address`; returns (leader address hint, whether it was welcomed). `direct`: the
        servers this worker can reach now (a follower sends it to the leader if it is among them)."""
        hello = worker_pb2.Hello(
            worker_id=self.config.worker_id,
            capacity=self.config.capacity,
            queues=list(self.config.queues),
            labels=dict(self.config.labels),
            sent_mono_ms=int(mono_s(self._clock) * 1000),
            incarnation=self.incarnation,
            version=CRONRAFT_VERSION,  # its release, shown by the leader (docs/operations.md, Upgrades)
            features=list(WORKER_FEATURES),
            direct=list(direct),
        )
        options = [("grpc.max_receive_message_length", CLIENT_MAX_RECEIVE_BYTES)]  # lease offers
        async with self.config.transport.aio_channel(address, options) as channel:
            stub = worker_pb2_grpc.WorkerGatewayStub(channel)
            call = stub.Connect()
            try:
                first = await open_stream(call, worker_pb2.WorkerMessage(hello=hello), _HELLO_TIMEOUT_S)
                if first is None:  # EOF: ended without a status error
                    return None, False
                kind = first.WhichOneof("kind")
                if kind == "not_leader":
                    return first.not_leader.leader_address or None, False
                if kind != "welcome":
                    self._log.warning("expected Welcome first; reconnecting", address=address, got=kind)
                    return None, False
                session = Session(call, first.welcome, address)
                self._runners.cluster_max_result_bytes = first.welcome.max_result_bytes
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
                    self._live.disconnected(session)
            finally:
                call.cancel()

    async def _serve(self, session: Session) -> str | None:
        """Run the welcomed stream until it ends; returns a leader address hint if the leader moved."""
        self._results.ready.set()  # resend the whole outbox on every new stream
        reader = asyncio.create_task(self._read_loop(session), name="read")
        tasks = {
            reader,
            asyncio.create_task(self._heartbeats.loop(session), name="heartbeat"),
            asyncio.create_task(self._results.send_loop(session, self._live.flush_finished), name="results"),
            asyncio.create_task(self._live.flush_loop(session), name="output"),
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

    async def _read_loop(self, session: Session) -> str | None:
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
                self._heartbeats.on_ack(session, message.heartbeat_ack)
            elif kind == "acks":
                await self._results.on_acks(session, message.acks.execution_ids)
            elif kind == "cancel":
                self._on_cancel(message.cancel)
            elif kind == "not_leader":
                return message.not_leader.leader_address or None
            else:
                self._log.debug("ignored gateway message", kind=kind)

    def _offer(self, session: Session, lease: worker_pb2.Lease, echo_ms: int = 0) -> None:
        # Each read of a protobuf field makes a Python object: the execution id and token, once.
        execution_id = lease.execution_id
        token = lease.token
        key = (execution_id, token.term, token.index)  # attempt_key
        if self._state is _State.DRAINING:
            # Reported, not ignored: an ignored offer waited out its lease, and a lease that may have
            # begun ends at_most_once executions `lost` (issue 17). Nothing ran, so it is granted again.
            self._log.warning("shutting down: lease offer declined", execution_id=execution_id)
            if not self._results.holds(key):
                declined = not_started(lease, "worker shutting down; not started", self._clock.now_ms())
                task = asyncio.create_task(self._report(declined), name=f"declined {execution_id}")
                self._declining.add(task)
                task.add_done_callback(self._declining.discard)
            return
        if key in self._attempts or self._results.holds(key):
            self._log.debug("duplicate lease offer ignored", execution_id=execution_id)
            return
        failpoint("worker.lease_received_before_start")
        running = self._running_executions
        if running.get(execution_id):  # get: a Counter's miss is a Python call (__missing__)
            self._log.warning(
                "another attempt of this execution is still running here",
                execution_id=execution_id,
                token=f"{token.term}.{token.index}",
            )
        if len(self._attempts) >= self.config.capacity:
            self._log.warning(
                "lease offered beyond capacity; running it anyway",
                execution_id=execution_id,
                running=len(self._attempts),
                capacity=self.config.capacity,
            )
        ttl_ms = lease.lease_ttl_ms
        ttl_s = ttl_ms / 1000 if ttl_ms > 0 else session.lease_ttl_s
        runner = self._runners.for_lease(lease, self._live.open(key, token))
        received = mono_s(self._clock)
        deadline = leases.offer_deadline(received, ttl_s, echo_ms)
        attempt = Attempt(
            key, lease, runner, ttl_s, deadline=deadline, start_at=received + lease.start_delay_ms / 1000
        )
        self._attempts[key] = attempt
        self._fence_due = min(self._fence_due, deadline)
        self._held.add(attempt)
        if self._heartbeats.idle_wait:
            self._heartbeat_now.set()  # renewals are due at the ordinary interval from now on
        running[execution_id] = running.get(execution_id, 0) + 1
        attempt.task = asyncio.create_task(self._run_attempt(attempt), name=f"attempt {execution_id}")
        if self._debug:
            self._log.debug("attempt started", execution_id=execution_id, attempt=lease.attempt)

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

    async def _run_attempt(self, attempt: Attempt) -> None:
        execution_id = attempt.key[0]  # for the rare log lines: not a protobuf read
        began = False
        handed = False  # the result went to the outbox's writer: `_stored` ends the attempt
        try:
            try:
                environ = os.environ if self._base_env is None else self._base_env
                waited = refusal(
                    self.config.policy,
                    attempt.lease,
                    environ=environ,
                    worker_id=self.config.worker_id,
                    clock=self._clock,
                    log=self._log,
                )
                if waited is None:
                    waited = await self._gates.await_start(attempt)
                if waited is None and attempt.lease.HasField("sensor"):
                    waited = await await_sensor(attempt, self._runners.for_lease, self._clock, self._log)
                if waited is None:
                    began = True
                    if self._metrics is not None:
                        self._metrics.attempt_started(mono_s(self._clock) - attempt.start_at)
                result = waited if waited is not None else await attempt.runner.run()
                if result.outcome == common_pb2.ATTEMPT_REFUSED and not result.error.startswith("refused"):
                    # Refused while starting (an address, a secret gone since the check): say by whom.
                    result.error = f"refused by worker {self.config.worker_id}: {result.error}"
            except Exception as exc:  # a bug of ours: report it rather than lose the attempt
                self._log.exception("attempt runner failed", execution_id=execution_id)
                result = not_started(
                    attempt.lease, f"worker error before the start: {exc!r}", self._clock.now_ms()
                )
                if began:
                    result = common_pb2.AttemptResult(
                        execution_id=execution_id,
                        token=attempt.lease.token,
                        outcome=common_pb2.ATTEMPT_FAILED,
                        exit_code=126,
                        finished_at_ms=self._clock.now_ms(),
                        error=f"worker error: {exc!r}",
                    )
            if attempt.revoked:
                self._log.info("revoked attempt killed; no result reported", execution_id=execution_id)
                return
            if self._metrics is not None:
                self._metrics.attempt_finished(result.outcome)
            failpoint("worker.after_finish_before_report")
            # The attempt stays held (heartbeats list it as running) until its result is stored.
            self._results.store_then(result, attempt.key, functools.partial(self._stored, attempt, result))
            handed = True
        finally:
            if not handed:
                self._end(attempt)

    def _stored(self, attempt: Attempt, result: common_pb2.AttemptResult, error: OSError | None) -> None:
        """The outbox write of `attempt`'s result is done (`error`: it failed): send it; the attempt
        is over."""
        try:
            if error is not None:
                # Not durable, but still delivered if the stream holds: better than dropping it.
                self._log.error(
                    "outbox write failed; result kept in memory",
                    execution_id=result.execution_id,
                    error=str(error),
                )
                self._results.volatile[attempt.key] = result
            self._results.add_fresh(result, attempt.key)
            failpoint("worker.after_outbox_before_send")
            if self._debug:
                self._log.debug(
                    "attempt finished",
                    execution_id=result.execution_id,
                    outcome=_OUTCOME_NAMES.get(result.outcome, result.outcome),
                    exit_code=result.exit_code,
                )
            self._results.ready.set()
        finally:
            self._end(attempt)

    def _end(self, attempt: Attempt) -> None:
        key = attempt.key
        if self._attempts.pop(key, None) is not None:
            running = self._running_executions
            left = running[key[0]] - 1
            if left > 0:
                running[key[0]] = left
            else:
                del running[key[0]]
        self._live.finish(key)

    async def _report(self, result: common_pb2.AttemptResult) -> None:
        """Store and send a result made without an attempt task (a declined offer)."""
        try:
            await self._results.store(result)
        except OSError:
            self._results.volatile[result_key(result)] = result
        self._results.add_fresh(result)
        self._results.ready.set()

    async def _fence_loop(self) -> None:
        """Self-fencing (I5): kill every attempt whose lease was not renewed before its local deadline."""
        while True:
            now = mono_s(self._clock)
            if now >= self._fence_due:  # else no deadline can have passed: no pass over every attempt
                self._fence_due = leases.fence_overdue(self._attempts.values(), now, self._log)
            await sleep_to_tick(self.config.fence_check_interval_s)
