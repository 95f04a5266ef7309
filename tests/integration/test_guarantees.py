"""The failure matrix of docs/guarantees.md, one test per cell, with real processes (issue 4).

Every test runs a 3-node cluster and real `schedworker` processes, injects one failure (a failpoint that
`os._exit(137)`s a process at a named place, `kill -9`, SIGSTOP), and then checks two records that must
agree with the docs: the cluster's (execution state, attempt number, fencing token, attempt history) and
the payload's own (an append-only ledger file outside the system: one line per run that got that far).

Timing: the leader expires a lease `lease_ttl_ms + grace` after its last renewal (grace = max(1 s,
TTL / 2)); with the 2 s TTL used here that is 3 s. Waits are polls of a condition with a deadline; the
only sleeps are the failures themselves (a worker kept stopped), and each says so.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cronraft.client import Client, at, command
from cronraft.proto.v1 import common_pb2

from .harness import Cluster, ledger_command, read_ledger, wait_for

pytestmark = pytest.mark.integration

TTL_MS = 2000  # the leader expires a lease 3 s (TTL + 1 s grace) after its last renewal

AT_MOST_ONCE = "at-most-once"
# exactly_once takes the at_least_once code path in every cell (the state machine's expiry and retry rules
# treat them alike); its runs are `slow` to keep the default run short, one of each path stays in it.
GUARANTEES = ["at-least-once", pytest.param("exactly-once", marks=pytest.mark.slow), AT_MOST_ONCE]

ACTIVE = (common_pb2.EXECUTION_PENDING, common_pb2.EXECUTION_RUNNING, common_pb2.EXECUTION_BUFFERED)

MakeCluster = Callable[..., Cluster]


@pytest.fixture
def make_cluster(
    tmp_path: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> Iterator[MakeCluster]:
    """Start a cluster (no workers) with the given lease TTL and extra environment for its nodes."""
    made: list[Cluster] = []

    def make(lease_ttl_ms: int = TTL_MS, env: dict[str, str] | None = None) -> Cluster:
        c = Cluster(tmp_path, n=3, lease_ttl_ms=lease_ttl_ms, heartbeat_interval_ms=500)
        c.env.update(env or {})
        made.append(c)
        c.start()
        return c

    failed_before = request.session.testsfailed
    try:
        yield make
    finally:
        for c in made:
            c.stop()
        if request.session.testsfailed > failed_before:
            with capsys.disabled():
                for c in made:
                    print(c.logs())


# -- helpers ----------------------------------------------------------------------------------------


def payload(ledger: Path, started: Path | None = None, sleep_s: float = 0.0) -> common_pb2.Payload:
    """The ledger payload; with `started`, it first writes its pid to `started/attempt-N` and sleeps."""
    argv = ledger_command(ledger)
    if started is None:
        return command(*argv)
    prefix = (
        "import os, time; "
        f"open(os.path.join({str(started)!r}, 'attempt-' + os.environ['CRONRAFT_ATTEMPT']), 'w')"
        ".write(str(os.getpid())); "
        f"time.sleep({sleep_s}); "
    )
    return command(sys.executable, "-c", prefix + argv[2])


def create(
    client: Client, guarantee: str, p: common_pb2.Payload, name: str = "cell", *, held: bool = True
) -> common_pb2.Execution:
    """A one-time task due in 300 ms; returns its execution once fired. `held`: it fires ahead (the
    default lead is 500 ms) and the worker holds the start until confirmed; else (a concurrency limit
    forbids firing ahead) it fires at its due time and starts as soon as its offer arrives."""
    task = client.create_task(
        name, at(int(time.time() * 1000) + 300), p, guarantee=guarantee, max_concurrency=0 if held else 1
    )
    (ex,) = wait_for(lambda: list(client.list_executions(task.task_id)), 30, "the fire")
    return ex


def running(client: Client, execution_id: str, attempt: int) -> common_pb2.Execution:
    """The execution once its attempt number `attempt` holds a lease."""

    def granted() -> common_pb2.Execution | None:
        e = client.get_execution(execution_id)
        return e if e.state == common_pb2.EXECUTION_RUNNING and e.attempt == attempt else None

    return wait_for(granted, 30, f"attempt {attempt} to be granted", interval_s=0.02)


def final(client: Client, execution_id: str, timeout_s: float = 60) -> common_pb2.Execution:
    def ended() -> common_pb2.Execution | None:
        e = client.get_execution(execution_id)
        return e if e.state not in ACTIVE else None

    return wait_for(ended, timeout_s, "a final state")


def died(cluster: Cluster, worker_id: str, timeout_s: float = 30) -> int:
    proc = cluster.workers[worker_id]
    wait_for(lambda: proc.poll() is not None, timeout_s, f"worker {worker_id} to exit")
    rc = proc.returncode
    assert rc is not None
    return rc


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie counts as dead
    except FileNotFoundError:
        return False


def token(ex: common_pb2.Execution) -> tuple[int, int]:
    return (ex.token.term, ex.token.index)


def failpoint_env(tmp_path: Path, spec: str, marker: str = "failpoint.marker") -> dict[str, str]:
    return {"CRONRAFT_FAILPOINTS": spec, "CRONRAFT_FAILPOINT_MARKER": str(tmp_path / marker)}


def outbox_files(cluster: Cluster, worker_id: str) -> list[str]:
    box = cluster.root / f"{worker_id}-outbox"
    return sorted(p.name for p in box.glob("*.result")) if box.exists() else []


def stop_worker(cluster: Cluster, worker_id: str) -> None:
    proc = cluster.workers[worker_id]
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=15)


def assert_lost_never_rerun(ex: common_pb2.Execution) -> None:
    assert ex.state == common_pb2.EXECUTION_LOST, common_pb2.ExecutionState.Name(ex.state)
    assert ex.attempt == 1
    assert "at_most_once" in ex.error


def assert_granted_again_unspent(ex: common_pb2.Execution, first: common_pb2.Execution) -> None:
    """Attempt 1's lease ended before its payload began: granted again (a newer token) as attempt 1,
    whatever the guarantee, and that run is the recorded outcome (issue 17)."""
    assert ex.state == common_pb2.EXECUTION_SUCCEEDED, common_pb2.ExecutionState.Name(ex.state)
    assert ex.attempt == 1 and ex.regrants == 1
    assert token(ex) > token(first)
    assert [(a.attempt, a.outcome) for a in ex.attempts] == [
        (1, common_pb2.ATTEMPT_NOT_STARTED),
        (1, common_pb2.ATTEMPT_SUCCEEDED),
    ]


def assert_regranted_once(ex: common_pb2.Execution, first: common_pb2.Execution) -> None:
    """Attempt 1's lease expired; attempt 2 (a newer token) ran and is the recorded outcome."""
    assert ex.state == common_pb2.EXECUTION_SUCCEEDED, common_pb2.ExecutionState.Name(ex.state)
    assert ex.attempt == 2
    assert token(ex) > token(first)
    assert [a.attempt for a in ex.attempts] == [1, 2]
    assert "lease expired" in ex.attempts[0].error
    assert ex.attempts[1].outcome == common_pb2.ATTEMPT_SUCCEEDED


# -- 1. worker crashes before the payload starts -----------------------------------------------------


@pytest.mark.parametrize("held", [True, False], ids=["held", "immediate"])
@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_worker_crash_before_the_payload_starts(
    make_cluster: MakeCluster, tmp_path: Path, guarantee: str, held: bool
) -> None:
    """Held (fired ahead): the leader never confirmed the start, so it knows nothing began and grants it
    again without spending an attempt, at_most_once too. Immediate: the worker may have begun it before
    dying, so the expiry keeps each guarantee's contract."""
    cluster = make_cluster()
    env = failpoint_env(tmp_path, "worker.lease_received_before_start=once-crash")
    cluster.start_worker("w1", env=env)
    cluster.wait_workers(1)
    ledger = tmp_path / "ledger"
    with Client(cluster.servers, timeout_s=30) as client:
        ex = create(client, guarantee, payload(ledger), held=held)
        first = running(client, ex.execution_id, 1)
        assert died(cluster, "w1") == 137
        cluster.start_worker("w1", env=env)  # same id; the marker exists, so it passes the failpoint now
        done = final(client, ex.execution_id)
    rows = read_ledger(ledger)
    if held:
        assert_granted_again_unspent(done, first)
        assert rows == [(ex.execution_id, ex.nominal_time_ms, 1)]
    elif guarantee == AT_MOST_ONCE:
        assert_lost_never_rerun(done)
        assert rows == []
    else:
        assert_regranted_once(done, first)
        assert rows == [(ex.execution_id, ex.nominal_time_ms, 2)]


# -- 2. worker crashes while the payload runs ---------------------------------------------------------


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_worker_crash_while_the_payload_runs_takes_the_payload_down(
    make_cluster: MakeCluster, tmp_path: Path, guarantee: str
) -> None:
    """`kill -9` of the worker: the guard process under it kills the payload's whole process group when
    the worker's lifeline closes, so nothing runs on the dead worker's lease. With retries the execution
    is re-granted and the payload runs (to completion) once."""
    cluster = make_cluster()
    cluster.start_worker("w1")
    cluster.wait_workers(1)
    ledger, started = tmp_path / "ledger", tmp_path / "started"
    started.mkdir()
    with Client(cluster.servers, timeout_s=30) as client:
        ex = create(client, guarantee, payload(ledger, started, sleep_s=1.5))
        first = running(client, ex.execution_id, 1)
        pid_file = started / "attempt-1"
        wait_for(lambda: pid_file.exists() and pid_file.read_text(), 20, "the payload to start")
        payload_pid = int(pid_file.read_text())
        cluster.workers["w1"].kill()
        cluster.workers["w1"].wait(timeout=10)
        wait_for(lambda: not alive(payload_pid), 5, "the payload to die with its worker")
        cluster.start_worker("w2")
        done = final(client, ex.execution_id)
    rows = read_ledger(ledger)
    if guarantee == AT_MOST_ONCE:
        assert_lost_never_rerun(done)
        assert rows == []  # killed before it could finish, and never run again
    else:
        assert_regranted_once(done, first)
        assert done.worker_id == "w2"
        assert rows == [(ex.execution_id, ex.nominal_time_ms, 2)]


# -- 3. worker finished, crashed before reporting ----------------------------------------------------


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_result_in_the_outbox_is_delivered_by_the_restarted_worker(
    make_cluster: MakeCluster, tmp_path: Path, guarantee: str
) -> None:
    """Crash after the outbox write; the worker comes back (same id and outbox) before the lease expires:
    the stored result is delivered, nothing runs again."""
    # A 3 s TTL (4.5 s to expiry): room for a Python worker to restart and reconnect on a loaded machine.
    cluster = make_cluster(lease_ttl_ms=3000)
    env = failpoint_env(tmp_path, "worker.after_outbox_before_send=once-crash")
    cluster.start_worker("w1", env=env)
    cluster.wait_workers(1)
    ledger = tmp_path / "ledger"
    with Client(cluster.servers, timeout_s=30) as client:
        ex = create(client, guarantee, payload(ledger))
        first = running(client, ex.execution_id, 1)
        assert died(cluster, "w1") == 137
        assert len(outbox_files(cluster, "w1")) == 1
        cluster.start_worker("w1", env=env)
        done = final(client, ex.execution_id)
    assert done.state == common_pb2.EXECUTION_SUCCEEDED, common_pb2.ExecutionState.Name(done.state)
    assert done.attempt == 1 and token(done) == token(first)
    assert read_ledger(ledger) == [(ex.execution_id, ex.nominal_time_ms, 1)]
    wait_for(lambda: not outbox_files(cluster, "w1"), 10, "the acknowledged result to leave the outbox")


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_result_lost_before_the_outbox_write(
    make_cluster: MakeCluster, tmp_path: Path, guarantee: str
) -> None:
    """Crash after the payload finished, before its result reached the outbox: the cluster cannot know
    it ran. With retries it runs again (the documented at-least-once duplicate); at-most-once: lost."""
    cluster = make_cluster()
    env = failpoint_env(tmp_path, "worker.after_finish_before_report=once-crash")
    cluster.start_worker("w1", env=env)
    cluster.wait_workers(1)
    ledger = tmp_path / "ledger"
    with Client(cluster.servers, timeout_s=30) as client:
        ex = create(client, guarantee, payload(ledger))
        first = running(client, ex.execution_id, 1)
        assert died(cluster, "w1") == 137
        assert outbox_files(cluster, "w1") == []
        cluster.start_worker("w1", env=env)
        done = final(client, ex.execution_id)
    rows = read_ledger(ledger)
    if guarantee == AT_MOST_ONCE:
        assert_lost_never_rerun(done)
        assert rows == [(ex.execution_id, ex.nominal_time_ms, 1)]  # it did run, once
    else:
        assert_regranted_once(done, first)
        assert rows == [(ex.execution_id, ex.nominal_time_ms, 1), (ex.execution_id, ex.nominal_time_ms, 2)]


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_result_in_the_outbox_delivered_after_expiry_is_refused(
    make_cluster: MakeCluster, tmp_path: Path, guarantee: str
) -> None:
    """Crash after the outbox write; the worker comes back only after the lease expired (and, with retries,
    after attempt 2 ran elsewhere): its stored attempt-1 result is stale and changes nothing."""
    cluster = make_cluster()
    env = failpoint_env(tmp_path, "worker.after_outbox_before_send=once-crash")
    cluster.start_worker("w1", env=env)
    cluster.wait_workers(1)
    ledger = tmp_path / "ledger"
    with Client(cluster.servers, timeout_s=30) as client:
        ex = create(client, guarantee, payload(ledger))
        first = running(client, ex.execution_id, 1)
        assert died(cluster, "w1") == 137
        cluster.start_worker("w2")
        done = final(client, ex.execution_id)
        stop_worker(cluster, "w2")  # so that the barrier below runs on w1
        cluster.start_worker("w1", env=env, extra_args=("--log-level", "debug"))
        wait_for(lambda: '"results sent"' in (cluster.root / "w1.log").read_text(), 20, "w1's outbox resend")
        # Barrier: w1's next result is sent on the same stream after the stale one, so once it committed
        # the stale one was decided too.
        barrier = create(client, "at-least-once", command("true"), name="barrier")
        assert final(client, barrier.execution_id).worker_id == "w1"
        after = client.get_execution(ex.execution_id)
    assert after == done
    rows = read_ledger(ledger)
    if guarantee == AT_MOST_ONCE:
        assert_lost_never_rerun(done)
        assert rows == [(ex.execution_id, ex.nominal_time_ms, 1)]
        # Its worker_id is still w1, so the ack reaches w1 (the retried case: see the next test).
        wait_for(lambda: not outbox_files(cluster, "w1"), 10, "the stale result to be acknowledged")
    else:
        assert_regranted_once(done, first)
        assert done.worker_id == "w2"
        assert rows == [(ex.execution_id, ex.nominal_time_ms, 1), (ex.execution_id, ex.nominal_time_ms, 2)]


def test_a_stale_result_is_acknowledged_to_the_worker_that_sent_it(
    make_cluster: MakeCluster, tmp_path: Path
) -> None:
    cluster = make_cluster()
    env = failpoint_env(tmp_path, "worker.after_outbox_before_send=once-crash")
    cluster.start_worker("w1", env=env)
    cluster.wait_workers(1)
    with Client(cluster.servers, timeout_s=30) as client:
        ex = create(client, "at-least-once", payload(tmp_path / "ledger"))
        assert died(cluster, "w1") == 137
        cluster.start_worker("w2")
        assert final(client, ex.execution_id).worker_id == "w2"
        cluster.start_worker("w1", env=env)
        # Refused as stale; but w1 must be told so, or it keeps it and resends it forever.
        wait_for(lambda: not outbox_files(cluster, "w1"), 10, "w1's stale result to be acknowledged")


# -- 4. worker cut off from the leader (here: the worker process paused) -----------------------------


@pytest.mark.parametrize(
    "guarantee",
    [
        "at-least-once",
        pytest.param("exactly-once", marks=pytest.mark.slow),
        AT_MOST_ONCE,
    ],
)
def test_paused_worker_self_fences_and_its_late_result_is_refused(
    make_cluster: MakeCluster, tmp_path: Path, guarantee: str
) -> None:
    """SIGSTOP the worker past TTL + grace. Only the worker process is paused: its payload (own process
    group) keeps running meanwhile. The leader expires the lease and, with retries, re-grants it to w2;
    on SIGCONT w1 finds its local deadline passed and kills its attempt before it wrote the ledger; the
    FAILED result it then reports for attempt 1 is stale."""
    cluster = make_cluster()
    # Capacity 1: once the lease expires, w2 (4 free slots) is preferred over the paused w1 (1 free),
    # whose stream the leader still sees open.
    cluster.start_worker("w1", capacity=1)
    cluster.wait_workers(1)
    ledger, started = tmp_path / "ledger", tmp_path / "started"
    started.mkdir()
    with Client(cluster.servers, timeout_s=30) as client:
        # 7 s: attempt 1 must still be running when w1 resumes (about 4 s after it started).
        ex = create(client, guarantee, payload(ledger, started, sleep_s=7))
        first = running(client, ex.execution_id, 1)
        wait_for((started / "attempt-1").exists, 20, "attempt 1 to start")
        w1 = cluster.workers["w1"]
        w1.send_signal(signal.SIGSTOP)
        try:
            cluster.start_worker("w2")
            if guarantee == AT_MOST_ONCE:
                lost = final(client, ex.execution_id, timeout_s=30)
            else:
                second = running(client, ex.execution_id, 2)
                assert second.worker_id == "w2"
                wait_for((started / "attempt-2").exists, 20, "attempt 2 to start on w2")
        finally:
            w1.send_signal(signal.SIGCONT)
        orphan = int((started / "attempt-1").read_text())
        wait_for(lambda: not alive(orphan), 5, "w1 to kill its attempt after resuming")
        log = cluster.root / "w1.log"
        assert "lease not renewed before its deadline" in log.read_text()
        # Attempt 2 (7 s) ends within about 7 s from here.
        done = final(client, ex.execution_id, timeout_s=15)
        # w1 reports attempt 1 (killed) with the old token: refused, acknowledged, nothing changes.
        wait_for(lambda: not outbox_files(cluster, "w1"), 15, "w1's stale result to be acknowledged")
        after = client.get_execution(ex.execution_id)
    assert after == done
    rows = read_ledger(ledger)
    if guarantee == AT_MOST_ONCE:
        assert done == lost
        assert_lost_never_rerun(done)
        assert rows == []
    else:
        assert_regranted_once(done, first)
        assert token(done) == token(second) and done.worker_id == "w2"
        assert rows == [(ex.execution_id, ex.nominal_time_ms, 2)]


# -- 5. leader killed during dispatch -------------------------------------------------------------------


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_leader_crash_between_grant_commit_and_dispatch(
    make_cluster: MakeCluster, tmp_path: Path, guarantee: str
) -> None:
    """The leader dies after the grant committed, before the offer left. One marker file for all nodes:
    only the first leader to reach the failpoint crashes; the next passes it. The worker's process, the
    one the lease was granted to, lists nothing: the new leader knows the attempt never began and grants
    it again without spending it, whatever the guarantee (it used to end at_most_once lost)."""
    cluster = make_cluster(
        env=failpoint_env(tmp_path, "leader.after_grant_commit_before_dispatch=once-crash", "leader.marker")
    )
    cluster.start_worker("w1", env={"CRONRAFT_FAILPOINTS": ""})
    cluster.wait_workers(1)
    ledger = tmp_path / "ledger"
    with Client(cluster.servers, timeout_s=30) as client:
        ex = create(client, guarantee, payload(ledger))
        crashed = wait_for(
            lambda: [n for n in cluster.nodes if n.proc is not None and n.proc.poll() is not None],
            30,
            "the leader to crash at the failpoint",
        )
        assert len(crashed) == 1 and crashed[0].proc is not None and crashed[0].proc.returncode == 137
        cluster.wait_leader()
        done = final(client, ex.execution_id)
    rows = read_ledger(ledger)
    assert done.attempts and "lease expired before its payload began" in done.attempts[0].error
    assert done.state == common_pb2.EXECUTION_SUCCEEDED and done.attempt == 1 and done.regrants == 1
    assert [a.attempt for a in done.attempts] == [1, 1]
    assert rows == [(ex.execution_id, ex.nominal_time_ms, 1)]


# -- 6. whole cluster restart with an attempt running -----------------------------------------------


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_whole_cluster_restart_while_an_attempt_runs(
    make_cluster: MakeCluster, tmp_path: Path, guarantee: str
) -> None:
    """`kill -9` every node while a 4 s payload runs, start them again: the worker reconnects, renews its
    lease with the new leader (which waits out the old leases first) and reports; nothing runs twice.
    Holds when the cluster is back before the worker's local deadline (TTL after its last renewal):
    with a 10 s TTL here; past it the worker would kill the attempt (self-fencing) and report FAILED."""
    cluster = make_cluster(lease_ttl_ms=10_000)
    cluster.start_worker("w1")
    cluster.wait_workers(1)
    ledger, started = tmp_path / "ledger", tmp_path / "started"
    started.mkdir()
    with Client(cluster.servers, timeout_s=30) as client:
        ex = create(client, guarantee, payload(ledger, started, sleep_s=4))
        first = running(client, ex.execution_id, 1)
        wait_for((started / "attempt-1").exists, 20, "the payload to start")
    down_at = time.monotonic()
    for node in cluster.nodes:
        cluster.kill(node)
    for node in cluster.nodes:
        cluster.start_node(node)
    cluster.wait_leader()
    back_after_s = time.monotonic() - down_at  # a diagnostic for the message below, not an assertion
    with Client(cluster.servers, timeout_s=30) as client:
        done = final(client, ex.execution_id)
    # The outcome says whether the cluster came back before the worker's deadline: a late one makes the
    # worker fence itself (FAILED, another token) instead of succeeding with its first lease.
    assert done.state == common_pb2.EXECUTION_SUCCEEDED, (
        f"{common_pb2.ExecutionState.Name(done.state)}; the cluster was back after {back_after_s:.1f} s "
        "(the worker's deadline: 10 s after its last renewal)"
    )
    assert done.attempt == 1 and token(done) == token(first)
    assert [a.attempt for a in done.attempts] == [1]
    assert read_ledger(ledger) == [(ex.execution_id, ex.nominal_time_ms, 1)]
