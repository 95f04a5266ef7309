"""Leader failover during each run semantic, with real processes: 3 `schedd` nodes and real workers.

The leader keeps in memory what the store alone does not act on: its timing wheel, the pending queue,
the leases, retries waiting for their backoff, start deadlines, dependencies waiting for their upstream.
A new leader rebuilds all of it from the store (daemon/leader/core.py, `on_epoch_committed` and the
horizon it loads). The bug class these tests hunt is something a new leader forgets: a run that should
happen and never does, or one that happens twice. Each test sets a situation up, SIGKILLs the leader,
waits for another one (the killed node is restarted, so the next test again has 3 nodes), then checks
that the semantic held, and that each nominal time of each task made at most one execution, each of
whose attempts ran once (`_ran_once`: a failover loses no lease here, so no re-dispatch is expected;
docs/guarantees.md: a new leader waits out the leases of earlier terms, which their workers renew).

Every payload (semantics.Stamps) stamps its start (execution id, attempt, CLOCK_MONOTONIC) in a file
of its test; a gated one then waits for its gate file, so a run lasts across a failover for as long as
the test needs.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from cronraft.client import Client, at, command, delay, every, retry
from cronraft.proto.v1 import common_pb2
from cronraft.raft.records import TERMINAL_STATES
from cronraft.raft.schedule import jitter_offset_ms
from tests.support.cluster import Proc, worker_argv

from .harness import Cluster, NodeProc, started, wait_for
from .semantics import Stamps, create_task_with_policies, executions_where, final_execution, now_ms, runs_of

pytestmark = pytest.mark.integration

PENDING = common_pb2.EXECUTION_PENDING
RUNNING = common_pb2.EXECUTION_RUNNING
BUFFERED = common_pb2.EXECUTION_BUFFERED
SUCCEEDED = common_pb2.EXECUTION_SUCCEEDED
EXPIRED = common_pb2.EXECUTION_EXPIRED
# How far a payload may start before its due instant by the worker's clock (the same machine clock:
# rounding only; test_schedule_kinds.py).
START_SLACK_MS = 20
GREEN = {"zone": "green"}  # carried by no worker until the label test starts one after its failover


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory, module_clusters: list[Cluster]) -> Cluster:
    # A lease outlives the longest time a worker here is cut off (the cancel test's: a failover and a
    # node's restart), so that no attempt is fenced by its worker's local deadline.
    c = Cluster(tmp_path_factory.mktemp("failover-semantics"), n=3, lease_ttl_ms=15_000)
    module_clusters.append(c)
    return started(c)


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """The module's cluster with its 3 nodes up and caught up (a node a test killed was restarted): a
    leader killed now leaves a quorum."""
    wait_for(lambda: all(n.alive for n in module_cluster.nodes), 10, "every node running")
    module_cluster.wait_converged(timeout_s=30)
    return module_cluster


@pytest.fixture
def client(cluster: Cluster) -> Iterator[Client]:
    with Client(cluster.servers, timeout_s=30) as c:
        yield c


@pytest.fixture
def stamps(tmp_path: Path) -> Iterator[Stamps]:
    s = Stamps(tmp_path / "stamps", tmp_path / "gate")
    yield s
    s.open()  # no payload outlives its test by its wait


# -- helpers ----------------------------------------------------------------------------------------


def _failover(c: Cluster) -> NodeProc:
    """SIGKILL the leader, wait for another one, restart the killed node (it catches up meanwhile; the
    `cluster` fixture waits for it before the next test). Returns the new leader."""
    old = c.wait_leader()
    c.kill(old)
    new = wait_for(lambda: (lead := c.leader()) is not None and lead is not old and lead, 30, "a new leader")
    c.start_node(old)
    return new


def _ran_once(client: Client, task_ids: Sequence[str], stamps: Stamps) -> None:
    """No duplicates: each nominal time of each task has one execution, each attempt of each execution
    started once (as its payload stamped it), and every stamped start is an attempt the store recorded."""
    attempts: set[tuple[str, int]] = set()
    for task_id in task_ids:
        runs = runs_of(client, task_id)
        nominal = Counter(e.nominal_time_ms for e in runs if not e.manual)
        assert max(nominal.values(), default=1) == 1, f"a nominal time fired twice: {nominal}"
        for e in runs:
            attempts.update((e.execution_id, a.attempt) for a in e.attempts if a.started_at_ms)
            if e.state == RUNNING:
                attempts.add((e.execution_id, e.attempt))
    started = Counter((eid, attempt) for eid, attempt, _ in stamps.starts())
    assert max(started.values(), default=1) == 1, f"an attempt started twice: {started}"
    assert set(started) <= attempts, f"a start the store does not know: {set(started) - attempts}"


# -- the cases --------------------------------------------------------------------------------------


def test_a_retry_in_its_backoff_runs_once_after_a_failover(
    cluster: Cluster, client: Client, stamps: Stamps
) -> None:
    """Attempt 1 fails; the leader is killed while its retry waits a 3 s backoff (in the old leader's
    pending queue only as a time to wake up): the new one grants it once the backoff ends, once."""
    initial_ms = 3000
    task = client.create_task(
        "fo-retry",
        at(now_ms() + 300),
        stamps.payload(succeed_from=2),
        max_attempts=3,
        retry=retry(f"{initial_ms}ms"),
    )
    (waiting,) = executions_where(
        client,
        task.task_id,
        lambda xs: xs[0].state == PENDING and len(xs[0].attempts) == 1,
        "attempt 1 to fail and the retry to wait for its backoff",
    )
    assert waiting.not_before_ms > now_ms() + 1000, "the backoff ended before the failover began"
    _failover(cluster)
    ex = final_execution(client, waiting.execution_id)
    assert ex.state == SUCCEEDED, ex
    assert [(a.attempt, a.exit_code) for a in ex.attempts] == [(1, 1), (2, 0)], ex.attempts
    a1, a2 = ex.attempts
    assert a2.started_at_ms - a1.finished_at_ms >= 0.8 * initial_ms, "the retry ran before its backoff ended"
    assert [attempt for _, attempt, _ in stamps.starts()] == [1, 2]
    _ran_once(client, [task.task_id], stamps)


def test_a_buffered_run_is_promoted_after_a_failover(
    cluster: Cluster, client: Client, stamps: Stamps
) -> None:
    """buffer_one: a run held by its gate, the next fire buffered behind it; the leader is killed. The
    running one's worker renews it with the new leader; once it ends, the buffered one is promoted, and
    runs, after it and once."""
    task = client.create_task(
        "fo-buffer-one", every("1s", max_runs=2), stamps.payload(gated=True), overlap="buffer_one"
    )
    running, buffered = executions_where(
        client,
        task.task_id,
        lambda xs: [e.state for e in xs] == [RUNNING, BUFFERED] and stamps.started(xs[0].execution_id),
        "one run held by its gate and one buffered behind it",
    )
    _failover(cluster)
    stamps.open()
    execs = executions_where(
        client,
        task.task_id,
        lambda xs: len(xs) == 2 and all(e.state in TERMINAL_STATES for e in xs),
        "the held run and the buffered one to end",
    )
    assert [e.execution_id for e in execs] == [running.execution_id, buffered.execution_id]
    assert [e.state for e in execs] == [SUCCEEDED, SUCCEEDED], execs
    first, second = execs
    assert second.attempts[0].started_at_ms >= first.attempts[0].finished_at_ms, "ran before the first ended"
    assert [(a.attempt, a.outcome) for a in first.attempts] == [(1, common_pb2.ATTEMPT_SUCCEEDED)]
    assert client.get_task(task.task_id).state == common_pb2.TASK_COMPLETED
    _ran_once(client, [task.task_id], stamps)


def test_a_downstream_runs_after_its_upstream_succeeds_past_a_failover(
    cluster: Cluster, client: Client, stamps: Stamps
) -> None:
    """The downstream of a logical date waits (pending, saying why) while its upstream runs held by its
    gate; the leader is killed; the upstream succeeds under the new leader, and the downstream runs once,
    after it."""
    nominal = now_ms() + 500  # both at one instant: the same logical date
    upstream = client.create_task("fo-dep-upstream", at(nominal), stamps.payload(gated=True))
    downstream = create_task_with_policies(
        client, "fo-dep-downstream", at(nominal), stamps.payload(), depends_on=[upstream.task_id]
    )
    (up,) = wait_for(
        lambda: (xs := runs_of(client, upstream.task_id)) and stamps.started(xs[0].execution_id) and xs,
        30,
        "the upstream to start",
    )
    (down,) = executions_where(
        client,
        downstream.task_id,
        lambda xs: xs[0].state == PENDING and "waiting for fo-dep-upstream" in xs[0].waiting_reason,
        "the downstream to wait for its upstream",
    )
    _failover(cluster)
    stamps.open()
    up = final_execution(client, up.execution_id)
    down = final_execution(client, down.execution_id)
    assert up.state == SUCCEEDED and down.state == SUCCEEDED, (up, down)
    assert down.attempts[0].started_at_ms >= up.attempts[0].finished_at_ms
    assert [a.attempt for a in down.attempts] == [1]
    _ran_once(client, [upstream.task_id, downstream.task_id], stamps)


def test_a_fixed_delay_chain_goes_on_after_a_failover(
    cluster: Cluster, client: Client, stamps: Stamps
) -> None:
    """A run of a fixed-delay task ends (held by the gate until then), which plans the next run its end
    plus the delay later; the leader is killed at once. The new leader runs the planned one and the
    chain goes on, each run the delay after the previous one ended."""
    delay_ms = 1500
    task = client.create_task("fo-delay", delay(f"{delay_ms}ms"), stamps.payload(gated=True))
    (first,) = wait_for(
        lambda: (xs := runs_of(client, task.task_id)) and stamps.started(xs[0].execution_id) and xs,
        30,
        "the first run to start",
    )
    stamps.open()  # later runs pass the open gate at once
    final_execution(client, first.execution_id)
    planned = client.get_task(task.task_id)
    assert planned.next_fire_ms > now_ms(), "the next run was due before the failover began"
    _failover(cluster)
    try:
        runs = executions_where(
            client,
            task.task_id,
            lambda xs: sum(e.state == SUCCEEDED for e in xs) >= 3,
            "two runs after the failover",
        )
    finally:
        client.cancel_task(task.task_id)
    assert runs[1].nominal_time_ms == planned.next_fire_ms, (runs[1], planned)
    done = [e for e in runs if e.state in TERMINAL_STATES]
    for prev, nxt in itertools.pairwise(done):
        assert nxt.nominal_time_ms >= prev.completed_at_ms + delay_ms, (prev, nxt)
    _ran_once(client, [task.task_id], stamps)


def test_a_run_waiting_for_a_labelled_worker_runs_when_one_connects_after_a_failover(
    cluster: Cluster, client: Client, stamps: Stamps
) -> None:
    """A run requiring a label no worker carries waits, saying why; the leader is killed; a worker with
    the label connects to the new leader, which grants it the waiting run: once, there."""
    task = client.create_task("fo-labels", at(now_ms() + 300), stamps.payload(), worker_labels=GREEN)
    (waiting,) = executions_where(
        client,
        task.task_id,
        lambda xs: xs[0].state == PENDING and "carries labels zone=green" in xs[0].waiting_reason,
        "the run to wait for a worker with the label",
    )
    _failover(cluster)
    cluster.start_worker("w-green", capacity=1, extra_args=("--worker-label", "zone=green"))
    ex = final_execution(client, waiting.execution_id)
    assert ex.state == SUCCEEDED and ex.worker_id == "w-green", ex
    assert [a.attempt for a in ex.attempts] == [1]
    _ran_once(client, [task.task_id], stamps)


def test_a_start_deadline_expires_a_run_after_a_failover(cluster: Cluster, client: Client) -> None:
    """A run on a queue nobody serves, with a start deadline that falls after the leader is killed: the
    new leader expires it (never started, the reason said), and soon after the deadline."""
    deadline_ms = 2500
    task = create_task_with_policies(
        client, "fo-deadline", at(now_ms() + 300), command("true"), queue="nowhere",
        start_deadline_ms=deadline_ms,
    )  # fmt: skip
    (pending,) = executions_where(
        client, task.task_id, lambda xs: xs[0].state == PENDING, "the run to be pending"
    )
    assert now_ms() < pending.fired_at_ms + deadline_ms, "the deadline passed before the failover began"
    _failover(cluster)
    ex = final_execution(client, pending.execution_id)
    assert ex.state == EXPIRED and ex.attempt == 0 and not ex.attempts, ex
    assert f"not started within {deadline_ms} ms of its fire" in ex.error, ex.error
    # Expired by the new leader's periodic check (every second), not forgotten until something else.
    late = ex.completed_at_ms - (ex.fired_at_ms + deadline_ms)
    assert 0 <= late < 10_000, late


def test_an_at_task_and_a_jittered_fire_due_during_a_failover_fire_once(
    cluster: Cluster, client: Client, stamps: Stamps
) -> None:
    """A one-time task due 1.5 s after the leader is killed fires once, under the new leader. A task
    every second with 800 ms of jitter has fires due throughout the failover: every nominal time from
    before the kill to well after it fires once, none lost, none twice, none before its due time."""
    jittered = client.create_task("fo-jitter", every("1s", jitter="800ms"), stamps.payload())
    executions_where(
        client, jittered.task_id, lambda xs: sum(e.state == SUCCEEDED for e in xs) >= 2, "two fires"
    )
    killed_at = now_ms()
    once = client.create_task("fo-at", at(killed_at + 1500), stamps.payload())
    _failover(cluster)
    try:
        (ex,) = executions_where(
            client, once.task_id, lambda xs: xs[0].state in TERMINAL_STATES, "the one-time run to end"
        )
        runs = executions_where(
            client,
            jittered.task_id,
            lambda xs: any(e.nominal_time_ms > killed_at + 4000 and e.state == SUCCEEDED for e in xs),
            "jittered fires well after the failover",
        )
    finally:
        client.cancel_task(jittered.task_id)
    assert ex.state == SUCCEEDED and [a.attempt for a in ex.attempts] == [1], ex
    assert ex.nominal_time_ms == killed_at + 1500
    assert client.get_task(once.task_id).state == common_pb2.TASK_COMPLETED
    nominal = [e.nominal_time_ms for e in runs]
    assert nominal == list(range(nominal[0], nominal[-1] + 1, 1000)), f"a fire lost: {nominal}"
    assert nominal[0] < killed_at < killed_at + 4000 < nominal[-1]
    for e in runs:  # never before its due time (START_SLACK_MS: the two clocks' rounding)
        if not e.attempts:  # fired ahead, not started yet when read (its due time still to come)
            assert e.state != SUCCEEDED and e.nominal_time_ms > killed_at + 4000, e
            continue
        due = e.nominal_time_ms + jitter_offset_ms(jittered.task_id, e.nominal_time_ms, 800)
        assert e.attempts[0].started_at_ms >= due - START_SLACK_MS, (e, due)
    _ran_once(client, [jittered.task_id, once.task_id], stamps)


def test_a_paused_task_stays_paused_across_a_failover_and_resumes(
    cluster: Cluster, client: Client, stamps: Stamps
) -> None:
    """A task paused before the leader is killed fires nothing under the new leader (while a control
    task every second fires several times), and a resume fires it again from the next nominal time
    after the resume, the paused period not replayed."""
    paused_task = client.create_task("fo-paused", every("1s"), stamps.payload())
    control = client.create_task("fo-control", every("1s"), command("true"))
    executions_where(
        client, paused_task.task_id, lambda xs: any(e.state == SUCCEEDED for e in xs), "a first run"
    )
    paused = client.pause_task(paused_task.task_id, note="failover")
    _failover(cluster)
    after_failover = now_ms()
    try:
        executions_where(
            client,
            control.task_id,
            lambda xs: sum(e.nominal_time_ms > after_failover and e.state == SUCCEEDED for e in xs) >= 3,
            "three control fires under the new leader",
        )
        while_paused = [
            e for e in runs_of(client, paused_task.task_id) if e.nominal_time_ms > paused.paused_at_ms
        ]
        assert while_paused == [], "the paused task fired after the failover"
        assert client.get_task(paused_task.task_id).state == common_pb2.TASK_PAUSED
        resumed = client.resume_task(paused_task.task_id)
        assert resumed.state == common_pb2.TASK_SCHEDULED
        runs = executions_where(
            client,
            paused_task.task_id,
            lambda xs: (
                sum(e.nominal_time_ms >= resumed.next_fire_ms and e.state == SUCCEEDED for e in xs) >= 2
            ),
            "two fires after the resume",
        )
    finally:
        client.cancel_task(paused_task.task_id)
        client.cancel_task(control.task_id)
    after = [e.nominal_time_ms for e in runs if e.nominal_time_ms > paused.paused_at_ms]
    assert after[:2] == [resumed.next_fire_ms, resumed.next_fire_ms + 1000], after
    assert resumed.next_fire_ms > after_failover
    _ran_once(client, [paused_task.task_id, control.task_id], stamps)


def test_a_cancel_asked_while_its_worker_has_no_stream_reaches_it_after_a_failover(
    cluster: Cluster, client: Client, stamps: Stamps
) -> None:
    """A run held by its gate on a worker that knows only the leader's address; the leader is killed and
    the run cancelled under the new leader while that worker has no stream (the new leader cannot tell
    it then); the killed node restarts and the worker reconnects through it: it must get the cancel and
    kill the payload, which otherwise runs on until its own end (here 60 s, the gate never opens)."""
    lead = cluster.wait_leader()
    outbox = cluster.root / "w-cut-outbox"
    cluster.core.add(Proc("w-cut", "worker", cluster.root / "w-cut.log"))
    argv = worker_argv("w-cut", lead.grpc_address, 1, outbox, ("--allow-shell", "--queue", "cut"))
    cluster.workers["w-cut"] = cluster.core.spawn("w-cut", argv, cluster.env)
    task = client.create_task("fo-cancel", at(now_ms() + 300), stamps.payload(gated=True), queue="cut")
    (ex,) = wait_for(
        lambda: (xs := runs_of(client, task.task_id)) and stamps.started(xs[0].execution_id) and xs,
        30,
        "the run to start on w-cut",
    )
    cluster.kill(lead)
    wait_for(lambda: (new := cluster.leader()) is not None and new is not lead, 30, "a new leader")
    client.cancel_execution(ex.execution_id, reason="stop it")
    cluster.start_node(lead)  # w-cut's one server: it reconnects through it
    try:
        ended = final_execution(client, ex.execution_id, timeout_s=20)
    finally:
        cluster.core.kill("w-cut", escalate=True)
    assert ended.state == common_pb2.EXECUTION_CANCELLED, ended
    assert [a.outcome for a in ended.attempts] == [common_pb2.ATTEMPT_CANCELLED], ended.attempts
    assert ended.worker_id == "w-cut"
    _ran_once(client, [task.task_id], stamps)
