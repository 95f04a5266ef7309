"""The synchronous Cronraft client: one object, one gRPC channel per server address, thread-safe.

GENERATED from client/aio.py by scripts/gen_sync_client.py: edit client/aio.py, then run `make clients`
(`make check` fails when this file is stale). The methods, arguments, docstrings and behaviour are those
of `AsyncClient`, without `await`. Its calls are in the generated `_sync_*` modules, one per subject, as
those of `AsyncClient` are in the `_aio_*` modules.

Writes (create, update, pause, resume, trigger, backfill, cancel, calendar changes, dead-letter redrive
and purge) go to the leader: a follower answers UNAVAILABLE with the leader's address in the
`cronraft-leader` trailing metadata, and the client retries there and remembers it. Every write carries a
`request_id` generated once per logical call and reused on each retry, so a retry after an unknown outcome
is safe (the cluster deduplicates). Reads go to any reachable node. UNAVAILABLE and DEADLINE_EXCEEDED are
retried over the configured servers with capped exponential backoff, within the client's `timeout_s`
(`_routing.CallPlan`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc  # type: ignore[import-untyped, unused-ignore]

from cronraft.client import _namespace, _routing
from cronraft.client._channels import CHANNEL_OPTIONS, Stubs, rpc_status
from cronraft.client._sync_bulk import BulkCalls
from cronraft.client._sync_calendars import CalendarCalls
from cronraft.client._sync_cluster import ClusterCalls
from cronraft.client._sync_dead_letters import DeadLetterCalls
from cronraft.client._sync_executions import ExecutionCalls
from cronraft.client._sync_tasks import TaskCalls
from cronraft.client._transport import Transport, with_tls_hint
from cronraft.errors import CronraftError

__all__ = ["Client"]

_Resp = TypeVar("_Resp")


# The subject mixins, one per `_sync_*` module; `BulkCalls` builds on `TaskCalls`, so it comes
# first. A new subject's mixin is added here; `make clients` then adds its sync twin to sdk.py's `Client`.
class Client(
    BulkCalls,
    TaskCalls,
    ExecutionCalls,
    CalendarCalls,
    DeadLetterCalls,
    ClusterCalls,
):
    """A synchronous client of a Cronraft cluster.

    `servers` is "host:port", several comma separated, or a sequence of them; None (the default) reads
    $CRONRAFT_SERVER, else 127.0.0.1:50051. `timeout_s` bounds each logical call, retries included;
    `attempt_timeout_s` bounds one attempt (default: half of `timeout_s`) so that a hung node leaves time
    to try another. `transport` carries TLS settings and the bearer token (default: from the environment,
    `client._transport`). `namespace` is where creates, imports, calendar calls, lists and bulk calls act
    unless a call or a spec names another (calls by id act in the object's own namespace; docs/security.md,
    "Namespaces"). Use it as a context manager (`with`), or `close()`.

    Errors raised are those of `cronraft.errors`: `InvalidArgument` (with `.field`), `NotFound`,
    `FailedPrecondition`, `ResourceExhausted`, `Unavailable` (retries exhausted), `DeadlineExceeded`,
    else `CronraftError`.
    """

    def __init__(
        self,
        servers: str | Sequence[str] | None = None,
        *,
        timeout_s: float = 10.0,
        attempt_timeout_s: float | None = None,
        max_redirects: int = 5,
        transport: Transport | None = None,
        namespace: str = _namespace.DEFAULT_NAMESPACE,
    ) -> None:
        self._router = _routing.Router(_routing.parse_servers(servers))
        # TLS and token (client._transport); None: from $CRONRAFT_TLS_* and $CRONRAFT_TOKEN.
        self._transport = transport if transport is not None else Transport.from_env()
        self.timeout_s = timeout_s
        self.attempt_timeout_s = attempt_timeout_s
        self.max_redirects = max_redirects
        # Creates, puts, lists and bulk calls act in this namespace unless told otherwise (client._namespace).
        self.namespace = _namespace.check(namespace)
        self._stubs: dict[str, Stubs] = {}
        self._lock = threading.Lock()  # the sync client is shared between threads
        self._closed = False

    @property
    def servers(self) -> list[str]:
        """The configured server addresses."""
        return list(self._router.servers)

    @property
    def leader(self) -> str | None:
        """The leader address learnt from the last write or redirect, if any."""
        return self._router.leader

    # ------------------------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Close every channel. Idempotent."""
        with self._lock:
            self._closed = True
            stubs, self._stubs = list(self._stubs.values()), {}
        for s in stubs:
            s.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _stubs_for(self, address: str) -> Stubs:
        with self._lock:
            if self._closed:
                raise CronraftError("client is closed")
            stubs = self._stubs.get(address)
            if stubs is None:
                stubs = Stubs(self._transport.channel(address, CHANNEL_OPTIONS))
                self._stubs[address] = stubs
            return stubs

    def _invoke(
        self,
        pick: Callable[[Stubs], Callable[..., Any]],
        request: Any,
        response_type: type[_Resp],
        *,
        write: bool,
        request_id: str | None = None,
    ) -> _Resp:
        plan = _routing.CallPlan(
            self._router,
            write=write,
            timeout_s=self.timeout_s,
            attempt_timeout_s=self.attempt_timeout_s,
            max_redirects=self.max_redirects,
        )
        while True:
            try:
                result = pick(self._stubs_for(plan.address))(request, timeout=plan.attempt_timeout())
            except grpc.RpcError as exc:
                code, details, leader = rpc_status(exc)
                delay = plan.failed(code, details, leader)
                if delay is None:
                    raise with_tls_hint(plan.give_up_error(request_id), self._transport) from None
                if delay > 0:
                    time.sleep(delay)
                continue
            plan.succeeded()
            if not isinstance(result, response_type):
                raise CronraftError(f"unexpected response type {type(result).__name__}")
            return result
