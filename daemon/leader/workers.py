"""The worker pool: connected workers, the queues they serve, their free slots, and the worker pick.

Inputs: connections and disconnections, "heard from" times, the silence check (monotonic time), and
slots taken (a grant or a lease) and released. Output: `pick(queue, labels, namespace)`, the eligible
worker (it serves the queue and the namespace, and carries every required label) with a free slot, or None.

A worker serves every namespace unless its credential holds `worker` in some namespaces only
(WorkerState.namespaces, from daemon.security.authz.worker_namespaces): the leader is where a
namespace's payloads are kept off another namespace's workers (docs/security.md, "Workers").

Pure: no store, no clock; the leader core passes monotonic times in.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from cronraft.daemon.leader.settings import LeaderSettings

EXACT_PICK = 32  # up to this many workers on a queue, a lease goes to the one with most free slots
SILENT_CHECK_MS = 200  # how often connected workers are checked for silence (worker_silent_ms)


@dataclass
class WorkerState:
    worker_id: str
    capacity: int
    queues: frozenset[str]
    labels: dict[str, str]
    # The namespaces (stored form: "" is the default one) whose executions it may be leased; None: every
    # one (the worker role in "*", or authentication off).
    namespaces: frozenset[str] | None = None
    connected: bool = True
    inflight: set[str] = field(default_factory=set)  # execution ids holding (or about to hold) a slot
    heard_mono_ms: int | None = None  # when it last sent anything (None: not since it connected)
    silent: bool = False  # not heard from for settings.worker_silent_ms: offered nothing new
    echo_ms: int = 0  # the worker's own stamp of its latest Hello/Heartbeat received (LeaseOffers.echo)
    reconciled: bool = False  # its complete listing was checked against the leases of earlier terms
    incarnation: str = ""  # the worker process (Hello.incarnation)
    draining: bool = False  # shutting down (Heartbeat.draining): offered nothing more
    # This connection's number (WorkerPool.connect counts them): the stream a lease's offer was written
    # to is known by it (LeaseState.stream), so that a complete listing on a newer stream can tell the
    # offers written into an older one that never reached the worker (LeaseKeeper.reconcile).
    stream: int = 0

    def free(self) -> int:
        if not self.connected or self.silent or self.draining:
            return 0
        return self.capacity - len(self.inflight)

    def carries(self, labels: Mapping[str, str] | None) -> bool:
        return not labels or all(self.labels.get(k) == v for k, v in labels.items())

    def serves(self, namespace: str) -> bool:
        """Whether executions of `namespace` (stored form) may be leased to it."""
        return self.namespaces is None or namespace in self.namespaces


class WorkerPool:
    def __init__(self, settings: LeaderSettings) -> None:
        self.settings = settings
        self.workers: dict[str, WorkerState] = {}
        # Worker ids per queue served (an ordered set), its list form for the rotating pick (rebuilt
        # after a change), the rotation's position, and the queues found with no free slot in this tick:
        # with thousands of workers a pass over all of them per fire capped the fire rate.
        self._serving: dict[str, dict[str, None]] = {}
        self._serving_list: dict[str, list[str]] = {}
        self._cursor: dict[str, int] = {}
        self._full: set[str] = set()
        self._next_silent_check = 0
        self._streams = 0  # connections counted (WorkerState.stream)
        # Workers known here that serve some namespaces only (WorkerState.namespaces): while there is
        # none (the common case) the leader need not read an execution's namespace to pick its worker.
        self.bound = 0

    # ---------------------------------------------------------------------------------- membership

    def connect(
        self,
        worker_id: str,
        capacity: int,
        queues: Sequence[str],
        labels: dict[str, str],
        mono_ms: int | None,
        *,
        echo_ms: int,
        incarnation: str,
        leases: Iterable[str],
        granting: Container[str],
        namespaces: frozenset[str] | None = None,
    ) -> WorkerState:
        """A worker (re)connected: its slots are taken by its `leases` and by the grants in flight
        (`granting`) its previous connection had; it is picked for executions of `namespaces` only (None:
        of every one). Leases it holds stay its own whatever their namespace: they were granted before
        (under the roles its credential then had); only new grants are bound to `namespaces`."""
        w = WorkerState(
            worker_id, max(1, capacity), frozenset(queues or ["default"]), dict(labels), namespaces
        )
        w.heard_mono_ms = mono_ms
        w.echo_ms = echo_ms
        w.incarnation = incarnation
        self._streams += 1
        w.stream = self._streams
        w.inflight = set(leases)
        old = self.workers.get(worker_id)
        if old is not None:
            w.inflight |= {e for e in old.inflight if e in granting}
            self._unserve(old)
            if old.namespaces is not None:
                self.bound -= 1
        self.workers[worker_id] = w
        if namespaces is not None:
            self.bound += 1
        for q in w.queues:
            self._serving.setdefault(q, {})[worker_id] = None
            self._serving_list.pop(q, None)
        return w

    def disconnect(self, worker_id: str) -> None:
        # Its leases stay: the worker keeps running and renews them if it comes back in time.
        w = self.workers.get(worker_id)
        if w is not None:
            w.connected = False
            if not w.inflight:
                # Nothing to remember (a reconnect rebuilds its state from the leases): worker ids
                # carry a pid, so a restarted worker would otherwise leave its old state here forever.
                del self.workers[worker_id]
                self._unserve(w)
                if w.namespaces is not None:
                    self.bound -= 1

    def _unserve(self, w: WorkerState) -> None:
        for q in w.queues:
            ids = self._serving.get(q)
            if ids is not None:
                ids.pop(w.worker_id, None)
                self._serving_list.pop(q, None)

    def get(self, worker_id: str) -> WorkerState | None:
        return self.workers.get(worker_id)

    # ------------------------------------------------------------------------------------ liveness

    def heard_from(self, worker_id: str, mono_ms: int) -> None:
        w = self.workers.get(worker_id)
        if w is not None:
            w.heard_mono_ms = mono_ms
            w.silent = False

    def idle_heartbeat_ms(self) -> int:
        """How often a worker holding nothing heartbeats now (Welcome, HeartbeatAck)."""
        s = self.settings
        stretch = -(-len(self.workers) // max(1, s.idle_workers_per_interval))  # ceil
        longest = max(s.max_idle_heartbeat_ms, s.heartbeat_interval_ms)
        return min(longest, s.heartbeat_interval_ms * max(1, stretch))

    def mark_silent(self, mono_ms: int) -> None:
        limit = self.settings.worker_silent_ms
        if limit <= 0 or mono_ms < self._next_silent_check:
            return
        # Silence is measured in seconds: a pass over every worker at each tick cost a leader with
        # thousands of worker streams more than their heartbeats.
        self._next_silent_check = mono_ms + SILENT_CHECK_MS
        # A worker holding nothing heartbeats at the idle interval: the same two missed heartbeats.
        idle_limit = limit + 2 * max(0, self.idle_heartbeat_ms() - self.settings.heartbeat_interval_ms)
        for w in self.workers.values():
            if w.heard_mono_ms is None:
                w.heard_mono_ms = mono_ms  # connected without a time: its silence counts from now
            elif w.connected:
                w.silent = mono_ms - w.heard_mono_ms > (limit if w.inflight else idle_limit)

    # --------------------------------------------------------------------------------------- slots

    def take_slot(self, worker_id: str, execution_id: str) -> None:
        w = self.workers.get(worker_id)
        if w is not None:
            w.inflight.add(execution_id)

    def release_slot(self, worker_id: str, execution_id: str) -> None:
        w = self.workers.get(worker_id)
        if w is not None:
            w.inflight.discard(execution_id)

    def release_anywhere(self, execution_id: str) -> None:
        """Release a slot whose worker is not known (a pass over every worker: only when unavoidable)."""
        for w in self.workers.values():
            w.inflight.discard(execution_id)

    # ---------------------------------------------------------------------------------------- pick

    def new_tick(self) -> None:
        """Slots are released between ticks (outcomes, disconnects), never during one."""
        self._full.clear()

    def served_queues(self) -> set[str]:
        """Queues some worker serves that were not found full in this tick."""
        return {q for q, ids in self._serving.items() if ids and q not in self._full}

    def pick(self, queue: str, labels: Mapping[str, str] | None, namespace: str) -> WorkerState | None:
        """An eligible worker (serves the queue and `namespace`, the execution's task's in stored form,
        and carries every required label) with a free slot: the one with most free slots among up to
        EXACT_PICK workers of the queue; beyond that, the next in rotation, so that a fire costs O(1)
        amortised instead of a pass over thousands of workers. The namespace is looked at only for a
        worker that has a free slot and the labels (most fail before: the common case, every worker in
        "*", pays one attribute read per such worker)."""
        queue = queue or "default"
        if queue in self._full:
            return None
        ids = self._serving_list.get(queue)
        if ids is None:
            ids = self._serving_list[queue] = list(self._serving.get(queue, ()))
        n = len(ids)
        workers = self.workers
        # A free slot skipped for its namespace: the queue is not full, only not for this namespace.
        elsewhere = False
        if n <= EXACT_PICK:
            best: WorkerState | None = None
            most = 0  # best's free slots (each worker's counted once: this runs for every fire)
            for worker_id in ids:
                w = workers[worker_id]
                if not w.connected or w.silent or w.draining:  # WorkerState.free, inline: no free slot
                    continue
                free = w.capacity - len(w.inflight)
                if free <= most or (labels and any(w.labels.get(k) != v for k, v in labels.items())):
                    continue
                served = w.namespaces
                if served is not None and namespace not in served:
                    elsewhere = True
                    continue
                best, most = w, free
            if best is None and not labels and not elsewhere:
                self._full.add(queue)
            return best
        start = self._cursor.get(queue, 0)
        for step in range(n):
            w = workers[ids[(start + step) % n]]
            if w.free() <= 0 or (labels and any(w.labels.get(k) != v for k, v in labels.items())):
                continue
            served = w.namespaces
            if served is not None and namespace not in served:
                elsewhere = True
                continue
            self._cursor[queue] = (start + step + 1) % n
            return w
        if not labels and not elsewhere:
            self._full.add(queue)  # none has a slot: no further pass over them in this tick
        return None

    def unserved_reason(self, queue: str, labels: Mapping[str, str], namespace: str) -> str:
        """Why no worker can take work of `queue` in `namespace` (stored form) needing `labels` (empty:
        some worker could)."""
        serving = [w for w in self.workers.values() if w.connected and queue in w.queues]
        if not serving:
            return f"no connected worker serves queue {queue!r}"
        serving = [w for w in serving if w.serves(namespace)]
        if not serving:
            return (
                f"no connected worker serves namespace {namespace or 'default'!r} on queue {queue!r} "
                "(its workers' credentials hold the worker role in other namespaces only)"
            )
        eligible = [w for w in serving if w.carries(labels)]
        if not eligible:
            wanted = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
            return f"no worker of queue {queue!r} carries labels {wanted}"
        return ""

    def busy_reason(self, queue: str, labels: Mapping[str, str], namespace: str) -> str:
        """'all N eligible workers are busy' when none of them has a free slot (empty otherwise)."""
        eligible = [
            w
            for w in self.workers.values()
            if w.connected and queue in w.queues and w.carries(labels) and w.serves(namespace)
        ]
        if eligible and not any(w.free() > 0 for w in eligible):
            return f"all {len(eligible)} eligible workers are busy"
        return ""


__all__ = ["EXACT_PICK", "WorkerPool", "WorkerState"]
