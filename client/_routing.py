"""Where a client call goes and what its failure means: the server list, leader redirects, retries.

- `parse_servers` reads `servers` or $CRONRAFT_SERVER.
- `Router` (one per client) remembers the leader and the server that answered last; `CallPlan` (one
  per logical call) decides which address to try next, when to follow a redirect (UNAVAILABLE with
  the `cronraft-leader` trailing metadata, `leader_from_metadata`) and how long to back off. The
  clients only perform the I/O the plan asks for.
- `error_from_status` maps a gRPC status to the error tree of `cronraft.errors` (the one place).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from cronraft.errors import (
    CronraftError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

DEFAULT_SERVER = "127.0.0.1:50051"
SERVER_ENV = "CRONRAFT_SERVER"
LEADER_METADATA_KEY = "cronraft-leader"


def parse_servers(servers: str | Sequence[str] | None) -> list[str]:
    """Normalise `servers` ("h:p", "h:p,h:p" or a list) into a list; None reads $CRONRAFT_SERVER."""
    if servers is None:
        servers = os.environ.get(SERVER_ENV) or DEFAULT_SERVER
    parts = servers.split(",") if isinstance(servers, str) else [p for s in servers for p in s.split(",")]
    result = [p.strip() for p in parts if p.strip()]
    if not result:
        raise InvalidArgument("servers", "no server address given (expected HOST:PORT[,HOST:PORT...])")
    return result


# ------------------------------------------------------------------------------------------------ errors


def error_from_status(code_name: str, details: str | None) -> CronraftError:
    """Map a gRPC status (code by name, e.g. "NOT_FOUND") to the error tree of `cronraft.errors`.

    INVALID_ARGUMENT details read "field: problem" (split on the first ": "); without one, the field is
    "request".
    """
    message = details or code_name.lower()
    if code_name == "INVALID_ARGUMENT":
        field_name, sep, problem = message.partition(": ")
        if not sep or not field_name or " " in field_name:
            return InvalidArgument("request", message)
        return InvalidArgument(field_name, problem)
    classes: dict[str, type[CronraftError]] = {
        "NOT_FOUND": NotFound,
        "FAILED_PRECONDITION": FailedPrecondition,
        "RESOURCE_EXHAUSTED": ResourceExhausted,
        "UNAVAILABLE": Unavailable,
        "DEADLINE_EXCEEDED": DeadlineExceeded,
        "UNAUTHENTICATED": Unauthenticated,
        "PERMISSION_DENIED": PermissionDenied,
    }
    cls = classes.get(code_name)
    if cls is None:
        return CronraftError(f"{code_name.lower()}: {message}")
    return cls(message)


def leader_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The leader address a follower put in the trailing metadata, or None if absent or empty."""
    for key, value in metadata or ():
        if key.lower() == LEADER_METADATA_KEY:
            text = value.decode() if isinstance(value, bytes) else value
            return text.strip() or None
    return None


# ----------------------------------------------------------------------------------------------- routing


RETRYABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})


class Router:
    """Where a client sends its calls; shared by all the calls of one client. Its two fields are plain
    hints written without a lock: a lost update between threads costs at most one extra redirect.

    Writes go to the leader when one is known, else to the servers in turn. Reads go to the server that
    answered last (any node can serve them), else to the servers in turn.
    """

    def __init__(self, servers: Sequence[str]) -> None:
        self.servers = list(servers)
        self.leader: str | None = None
        self.preferred = 0  # index into servers for reads / leader discovery

    def first(self, write: bool) -> str:
        if write and self.leader:
            return self.leader
        return self.servers[self.preferred % len(self.servers)]

    def succeeded(self, address: str, write: bool) -> None:
        if write:
            self.leader = address
        if address in self.servers:
            self.preferred = self.servers.index(address)


@dataclass
class Backoff:
    """Capped exponential backoff with jitter (0.5x to 1x of the step)."""

    initial_s: float = 0.05
    cap_s: float = 1.0
    multiplier: float = 2.0
    rand: Callable[[], float] = random.random
    _step: float = field(default=0.0, init=False)

    def next(self) -> float:
        self._step = self.initial_s if self._step == 0 else min(self.cap_s, self._step * self.multiplier)
        return self._step * (0.5 + 0.5 * self.rand())


@dataclass
class Failure:
    address: str
    code_name: str
    details: str


class CallPlan:
    """The retry plan of one logical call: which address next, how long to wait, when to give up.

    The caller loops: `address = plan.address`, perform the RPC with `plan.attempt_timeout()`; on success
    `plan.succeeded()`; on a gRPC error `delay = plan.failed(code, details, leader)` and sleep `delay`
    then try again, or raise `plan.give_up_error()` when `delay` is None.

    - A redirect (UNAVAILABLE with a leader address) is followed at once, at most `max_redirects` times.
    - UNAVAILABLE / DEADLINE_EXCEEDED move to the next configured server; after a full round over them,
      the plan backs off. The total is bounded by `timeout_s`.
    - Any other status is final: `failed` returns None and `give_up_error` maps it.
    """

    def __init__(
        self,
        router: Router,
        *,
        write: bool,
        timeout_s: float,
        attempt_timeout_s: float | None = None,
        max_redirects: int = 5,
        clock: Callable[[], float] = time.monotonic,
        backoff: Backoff | None = None,
    ) -> None:
        self.router = router
        self.write = write
        self.clock = clock
        self.deadline = clock() + timeout_s
        self.attempt_timeout_s = (
            attempt_timeout_s if attempt_timeout_s is not None else max(timeout_s / 2, 0.1)
        )
        self.max_redirects = max_redirects
        self.redirects_left = max_redirects
        self.backoff = backoff or Backoff()
        self.address = router.first(write)
        self.failures: list[Failure] = []
        self._final: Failure | None = None
        self._tried_in_round: set[str] = set()
        self._index = router.preferred

    def remaining(self) -> float:
        return self.deadline - self.clock()

    def attempt_timeout(self) -> float:
        return max(0.001, min(self.remaining(), self.attempt_timeout_s))

    def succeeded(self) -> None:
        self.router.succeeded(self.address, self.write)

    def failed(self, code_name: str, details: str, leader: str | None) -> float | None:
        """Record a failed attempt; return the delay before the next one, or None to give up."""
        failure = Failure(self.address, code_name, details)
        self.failures.append(failure)
        if code_name not in RETRYABLE:
            self._final = failure
            return None
        self._tried_in_round.add(self.address)
        if code_name == "UNAVAILABLE" and leader and leader != self.address and self.redirects_left > 0:
            self.redirects_left -= 1
            self.router.leader = leader
            self.address = leader
            return 0.0 if self.remaining() > 0 else None
        if self.router.leader == self.address:
            self.router.leader = None  # the leader we knew is gone or deposed: rediscover
        delay = 0.0
        nxt = self._next_server()
        if nxt is None:  # every server failed in this round: back off, then start a new round
            self._tried_in_round.clear()
            self.redirects_left = self.max_redirects
            nxt = self._next_server()
            delay = self.backoff.next()
        assert nxt is not None
        self.address = nxt
        if self.remaining() - delay <= 0.001:
            return None
        return delay

    def _next_server(self) -> str | None:
        servers = self.router.servers
        for _ in range(len(servers)):
            self._index = (self._index + 1) % len(servers)
            candidate = servers[self._index]
            if candidate not in self._tried_in_round:
                return candidate
        return None

    def give_up_error(self, request_id: str | None = None) -> CronraftError:
        """The error to raise once `failed` returned None."""
        if self._final is not None:
            return error_from_status(self._final.code_name, self._final.details)
        last = self.failures[-1] if self.failures else Failure(self.address, "UNAVAILABLE", "no attempt made")
        tried = ", ".join(dict.fromkeys(f.address for f in self.failures)) or self.address
        outcome = ""
        if self.write and request_id and any(f.code_name == "DEADLINE_EXCEEDED" for f in self.failures):
            outcome = f"; the outcome is unknown: retrying with request_id={request_id} is safe"
        if last.code_name == "DEADLINE_EXCEEDED":
            return DeadlineExceeded(f"deadline exceeded (tried {tried}): {last.details}{outcome}")
        return Unavailable(f"cluster unavailable (tried {tried}): {last.details}{outcome}")
