"""How runs end and chain, as a user sees them, with real processes: 3 `schedd` nodes and real workers
running real commands. Retries by exit code with their backoff, a timeout killing the whole process
tree (retried or not), start deadlines, a fixed-delay chain through every kind of ending, dependencies
for the same logical date, routing by queue and worker labels (and a queue's worker connecting late),
and HTTP payloads allowed by a worker's policy file.

What these tests hunt: a run that should happen and never does (the leader or a worker not learning
something) and a state that is never reached. test_execution.py covers the plain retry into the
dead-letter queue, a timeout's grandchild gone, cancel, HTTP and handler payloads on the default worker.
"""

from __future__ import annotations

import itertools
import subprocess
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cronraft.client import Client, at, command, cron, delay, every, http, retry
from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2
from cronraft.raft.records import TERMINAL_STATES

from .harness import Cluster, Worker, started, wait_for
from .semantics import create_task_with_policies, executions_where, final_execution, now_ms, only_execution

pytestmark = pytest.mark.integration

# w1 serves the default queue with the harness's flags (shell, HTTP to loopback). w2 serves the default
# queue and "routed", carries zone=blue and takes its policy from a file only: shell and argv as w1, HTTP
# to loopback but for 127.0.0.2 (the file's deny rule). w1 has more slots, so a task w2 runs is one the
# leader routed there: the pick takes the eligible worker with most free slots.
ROUTED_QUEUE = "routed"
LATE_QUEUE = "late"  # served by w3, started by the routing test
W2_LABELS = {"zone": "blue"}
W2_POLICY = """
[payloads]
kinds = ["argv", "shell", "http"]

[http]
allow_loopback = true
deny_networks = ["127.0.0.2/32"]
"""


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory, module_clusters: list[Cluster]) -> Cluster:
    root = tmp_path_factory.mktemp("run-semantics")
    policy = root / "w2-policy.toml"
    policy.write_text(W2_POLICY)
    policy.chmod(0o600)
    c = Cluster(root, n=3)
    module_clusters.append(c)
    w2 = Worker(
        "w2",
        capacity=3,
        extra_args=(
            *("--queue", "default", "--queue", ROUTED_QUEUE),
            *(arg for k, v in W2_LABELS.items() for arg in ("--worker-label", f"{k}={v}")),
        ),
        policy_args=("--policy", str(policy)),
    )
    return started(c, workers=(Worker("w1", capacity=8), w2))


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    return module_cluster


# -- helpers ----------------------------------------------------------------------------------------


def _count(xs: Iterable[common_pb2.Execution], state: int) -> int:
    return sum(1 for e in xs if e.state == state)


def _sh(script: str) -> common_pb2.Payload:
    """A script run by `sh -c` as an argv payload (every worker here runs argv payloads)."""
    return command("sh", "-c", script)


def _outcomes(ex: common_pb2.Execution) -> list[str]:
    return [common_pb2.AttemptOutcome.Name(a.outcome) for a in ex.attempts]


# -- retries by exit code ---------------------------------------------------------------------------


def test_retry_policy_by_exit_code_and_backoff_spacing(cluster: Cluster) -> None:
    """retryable codes are retried (spaced by the backoff, growing by the multiplier), a code off the
    retryable list ends the run, a non-retryable code is never retried, and a retried run may succeed."""
    soon = at(now_ms() + 300)
    initial_ms, multiplier = 500, 3.0
    with Client(cluster.servers, timeout_s=30) as client:
        # Attempts 1 and 2 exit 3 (retryable), attempt 3 exits 4: not among the retryable ones.
        listed = client.create_task(
            "rs-retry-listed",
            soon,
            _sh('[ "$CRONRAFT_ATTEMPT" -lt 3 ] && exit 3; exit 4'),
            max_attempts=6,
            retry=retry(f"{initial_ms}ms", multiplier, "30s", retryable=[3]),
        )
        never = client.create_task(
            "rs-retry-never",
            soon,
            _sh("exit 2"),
            max_attempts=6,
            retry=retry("200ms", non_retryable=[2]),
        )
        # Exit 7 (not listed as non-retryable) is retried; attempt 2 succeeds.
        recovers = client.create_task(
            "rs-retry-recovers",
            soon,
            _sh('[ "$CRONRAFT_ATTEMPT" -lt 2 ] && exit 7; exit 0'),
            max_attempts=3,
            retry=retry("200ms", non_retryable=[2]),
        )
        ex_listed = final_execution(client, only_execution(client, listed.task_id).execution_id)
        ex_never = final_execution(client, only_execution(client, never.task_id).execution_id)
        ex_recovers = final_execution(client, only_execution(client, recovers.task_id).execution_id)
        letters = {d.execution_id: d for d in client.list_dead_letters()}

    assert ex_listed.state == common_pb2.EXECUTION_FAILED, ex_listed
    assert [a.exit_code for a in ex_listed.attempts] == [3, 3, 4]
    assert ex_listed.dead_lettered and "exit code 4 is not among the retryable ones" in (
        letters[ex_listed.execution_id].reason
    )
    # The n-th retry waits initial * multiplier^(n-1), less a deterministic jitter of at most 20 %
    # (raft/retry.py), counted from the failed attempt's Complete: from its end at the earliest.
    a1, a2, a3 = ex_listed.attempts
    gap1 = a2.started_at_ms - a1.finished_at_ms
    gap2 = a3.started_at_ms - a2.finished_at_ms
    assert gap1 >= 0.8 * initial_ms, (gap1, gap2)
    assert gap2 >= 0.8 * initial_ms * multiplier, (gap1, gap2)
    assert gap2 > gap1, (gap1, gap2)

    assert ex_never.state == common_pb2.EXECUTION_FAILED and [a.exit_code for a in ex_never.attempts] == [2]
    assert ex_never.dead_lettered and "exit code 2 is not retryable" in letters[ex_never.execution_id].reason

    assert ex_recovers.state == common_pb2.EXECUTION_SUCCEEDED, ex_recovers
    assert [a.exit_code for a in ex_recovers.attempts] == [7, 0]
    assert _outcomes(ex_recovers) == ["ATTEMPT_FAILED", "ATTEMPT_SUCCEEDED"]
    assert not ex_recovers.dead_lettered and ex_recovers.execution_id not in letters


# -- timeouts ---------------------------------------------------------------------------------------


def test_a_timeout_kills_the_process_tree_and_is_retried_per_retry_on_timeout(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A timed-out attempt's background child, which would write a marker 1.5 s after it started, is
    killed with it: no marker ever appears. With retry_on_timeout the attempt is retried (to the attempt
    limit); without, the timeout is final and dead-lettered after one attempt."""
    out = tmp_path / "out"
    out.mkdir()
    # The child writes `child-<task>-<attempt>` at once and `marker-...` 1.5 s later; the parent hangs.
    script = (
        f'tag="$TAG-$CRONRAFT_ATTEMPT"; (sleep 1.5; touch {out}/marker-$tag) & '
        f"touch {out}/child-$tag; exec sleep 30"
    )
    soon = at(now_ms() + 300)
    with Client(cluster.servers, timeout_s=30) as client:
        retried = client.create_task(
            "rs-timeout-retried",
            soon,
            command("sh", "-c", script, env={"TAG": "retried"}),
            timeout_ms=800,
            max_attempts=2,
            retry=retry("200ms", retry_on_timeout=True),
        )
        final = client.create_task(
            "rs-timeout-final",
            soon,
            command("sh", "-c", script, env={"TAG": "final"}),
            timeout_ms=800,
            max_attempts=3,
            retry=retry("200ms", retry_on_timeout=False),
        )
        ex_retried = final_execution(client, only_execution(client, retried.task_id).execution_id)
        ex_final = final_execution(client, only_execution(client, final.task_id).execution_id)
        letters = {d.execution_id: d for d in client.list_dead_letters()}

    assert ex_retried.state == common_pb2.EXECUTION_TIMED_OUT, ex_retried
    assert _outcomes(ex_retried) == ["ATTEMPT_TIMED_OUT", "ATTEMPT_TIMED_OUT"]
    assert ex_retried.dead_lettered
    assert ex_final.state == common_pb2.EXECUTION_TIMED_OUT, ex_final
    assert _outcomes(ex_final) == ["ATTEMPT_TIMED_OUT"]
    assert ex_final.dead_lettered and "no_retry_on_timeout" in letters[ex_final.execution_id].reason

    children = sorted(p.name for p in out.glob("child-*"))
    assert children == ["child-final-1", "child-retried-1", "child-retried-2"], children
    # The control: the same child, started now outside any payload (so after every killed one started),
    # writes its marker; by then each killed child's marker would be there had it survived.
    control = subprocess.Popen(
        ["sh", "-c", f"(sleep 1.5; touch {out}/marker-control) & wait"], start_new_session=True
    )
    try:
        wait_for((out / "marker-control").exists, 15, "the control child's marker")
    finally:
        control.wait(timeout=10)
    assert sorted(p.name for p in out.glob("marker-*")) == ["marker-control"]


# -- start deadlines --------------------------------------------------------------------------------


def test_executions_that_cannot_start_in_time_expire_and_the_task_goes_on(cluster: Cluster) -> None:
    """start_deadline: a run on a queue no worker serves ends `expired` with the reason it waited, for a
    cron task and a fixed-delay task (whose next run is planned by that expiry) alike; with
    max_concurrency 1 and a long runner, the runs fired meanwhile expire and the task runs again once the
    long one ended. An execution that started in time is past its start deadline: its retry, due after
    the deadline, runs (it used to end `expired` during the backoff)."""
    with Client(cluster.servers, timeout_s=30) as client:
        unserved_cron = create_task_with_policies(
            client, "rs-deadline-unserved-cron", cron("* * * * * *"), command("true"), queue="nowhere",
            start_deadline_ms=1000,
        )  # fmt: skip
        unserved_delay = create_task_with_policies(
            client, "rs-deadline-unserved-delay", delay("1s"), command("true"), queue="nowhere",
            start_deadline_ms=1000,
        )  # fmt: skip
        limited = create_task_with_policies(
            client, "rs-deadline-limited", cron("* * * * * *"), command("sleep", "2"), max_concurrency=1,
            start_deadline_ms=1000,
        )  # fmt: skip
        # Started at once, failed: its retry waits a backoff longer than the start deadline, and runs.
        retried = create_task_with_policies(
            client, "rs-deadline-retried", at(now_ms() + 300), _sh("exit 1"), max_attempts=2,
            retry=retry("2500ms"), start_deadline_ms=1000,
        )  # fmt: skip
        try:
            ex_retried = final_execution(client, only_execution(client, retried.task_id).execution_id)
            assert ex_retried.state == common_pb2.EXECUTION_FAILED, ex_retried
            assert [a.exit_code for a in ex_retried.attempts] == [1, 1] and ex_retried.dead_lettered
            for task in (unserved_cron, unserved_delay):
                xs = executions_where(
                    client,
                    task.task_id,
                    lambda xs: _count(xs, common_pb2.EXECUTION_EXPIRED) >= 2,
                    f"two expired runs of {task.spec.name}",
                )
                expired = [e for e in xs if e.state == common_pb2.EXECUTION_EXPIRED]
                for e in expired:
                    assert e.attempt == 0 and not e.attempts, e  # never started anywhere
                    assert "not started within 1000 ms of its fire" in e.error, e.error
                    assert "no connected worker serves queue 'nowhere'" in e.error, e.error
                    assert e.completed_at_ms - e.fired_at_ms >= 1000
                assert client.get_task(task.task_id).state == common_pb2.TASK_SCHEDULED
            # The fixed-delay chain: each run is due the delay after the previous one expired.
            chain = sorted(
                (e for e in client.list_executions(unserved_delay.task_id) if e.state in TERMINAL_STATES),
                key=lambda e: e.nominal_time_ms,
            )
            for prev, nxt in itertools.pairwise(chain):
                assert nxt.nominal_time_ms >= prev.completed_at_ms + 1000, (prev, nxt)

            xs = executions_where(
                client,
                limited.task_id,
                lambda xs: (
                    _count(xs, common_pb2.EXECUTION_SUCCEEDED) >= 2
                    and _count(xs, common_pb2.EXECUTION_EXPIRED) >= 1
                ),
                "two runs of the limited task and an expired one between them",
            )
        finally:
            for task in (unserved_cron, unserved_delay, limited):
                client.cancel_task(task.task_id)
    expired = [e for e in xs if e.state == common_pb2.EXECUTION_EXPIRED]
    assert all(not e.attempts for e in expired), expired
    # Why it waited (a grant of the next run in flight may show "waiting for dispatch" for a moment).
    assert any("task max_concurrency 1 reached" in e.error for e in expired), expired
    runs = sorted(
        (e for e in xs if e.state == common_pb2.EXECUTION_SUCCEEDED),
        key=lambda e: e.attempts[0].started_at_ms,
    )
    # Never two at once: each run starts after the previous one finished.
    for prev, nxt in itertools.pairwise(runs):
        assert nxt.attempts[0].started_at_ms >= prev.attempts[0].finished_at_ms, (prev, nxt)


# -- fixed-delay chains -----------------------------------------------------------------------------


def test_a_fixed_delay_task_goes_on_after_every_kind_of_ending(cluster: Cluster) -> None:
    """Each ending plans the next run of a fixed-delay task (its end + the delay), and the leader must
    learn of it from the command that ended the run: a failure filed as a dead letter, a timeout, a
    refusal by the worker's policy, a cancel while pending. With stop_on_failure a failure completes it."""
    denied = "http://127.0.0.2:9/never"  # w2's policy file refuses it: nothing is sent
    with Client(cluster.servers, timeout_s=30) as client:
        failing = client.create_task(
            "rs-chain-failing", delay("1s"), _sh("exit 1"), max_attempts=1, retry=retry("200ms")
        )
        timing_out = client.create_task(
            "rs-chain-timeout", delay("1s"), command("sleep", "30"), timeout_ms=300
        )
        refused = client.create_task(
            "rs-chain-refused", delay("1s"), http(denied, method="POST"), queue=ROUTED_QUEUE
        )
        cancelled = client.create_task("rs-chain-cancelled", delay("1s"), command("true"), queue="nowhere")
        stops = client.create_task("rs-chain-stops", delay("1s", stop_on_failure=True), _sh("exit 1"))
        chains = {
            failing.task_id: common_pb2.EXECUTION_FAILED,
            timing_out.task_id: common_pb2.EXECUTION_TIMED_OUT,
            refused.task_id: common_pb2.EXECUTION_FAILED,
        }
        try:
            first = only_execution(client, cancelled.task_id)
            client.cancel_execution(first.execution_id, reason="not this one")
            nxt = executions_where(
                client, cancelled.task_id, lambda xs: len(xs) >= 2, "the run after the cancelled one"
            )
            ended = {task_id: executions_where(
                client, task_id, lambda xs, s=state: _count(xs, s) >= 2, f"two ended runs of {task_id}"
            ) for task_id, state in chains.items()}  # fmt: skip
            only = final_execution(client, only_execution(client, stops.task_id).execution_id)
            stopped = wait_for(
                lambda: (t := client.get_task(stops.task_id)).state == common_pb2.TASK_COMPLETED and t,
                15,
                "the stop_on_failure task to complete",
            )
            stops_runs = list(client.list_executions(stops.task_id))
        finally:
            for t in (failing, timing_out, refused, cancelled):
                client.cancel_task(t.task_id)
    assert {e.execution_id: e.state for e in nxt}[first.execution_id] == common_pb2.EXECUTION_CANCELLED
    for task_id, xs in ended.items():
        runs = sorted((e for e in xs if e.state in TERMINAL_STATES), key=lambda e: e.nominal_time_ms)
        assert all(e.state == chains[task_id] for e in runs), runs
        for prev, later in itertools.pairwise(runs):
            assert later.nominal_time_ms >= prev.completed_at_ms + 1000, (prev, later)
    assert all(e.dead_lettered for e in ended[failing.task_id] if e.state in TERMINAL_STATES)
    assert all(
        _outcomes(e) == ["ATTEMPT_REFUSED"] for e in ended[refused.task_id] if e.state in TERMINAL_STATES
    )
    assert only.state == common_pb2.EXECUTION_FAILED and [e.execution_id for e in stops_runs] == [
        only.execution_id
    ]
    assert stopped.next_fire_ms == 0


# -- dependencies -----------------------------------------------------------------------------------


def test_a_dependent_run_waits_for_the_upstream_success_of_its_logical_date(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The downstream run of a date starts only once the upstream succeeded for that date: not after the
    upstream's failed attempt, but after its retry succeeded. An upstream that fails for good leaves its
    downstream waiting (saying why), or failed at its dependency deadline."""
    marker = tmp_path / "upstream-done"
    nominal = now_ms() + 500  # both tasks at the same instant: the same logical date, even at midnight
    with Client(cluster.servers, timeout_s=30) as client:
        # Attempt 1 fails after 0.5 s, attempt 2 (after its backoff) writes the marker and succeeds.
        upstream = client.create_task(
            "rs-dep-upstream",
            at(nominal),
            _sh(f'sleep 0.5; [ "$CRONRAFT_ATTEMPT" -ge 2 ] || exit 1; touch {marker}'),
            max_attempts=2,
            retry=retry("500ms"),
        )
        downstream = create_task_with_policies(
            client,
            "rs-dep-downstream",
            at(nominal),
            command("test", "-f", str(marker)),  # fails if it runs before the upstream succeeded
            depends_on=[upstream.task_id],
        )
        failing = client.create_task("rs-dep-failing-upstream", at(nominal), _sh("exit 1"))
        with_deadline = create_task_with_policies(
            client,
            "rs-dep-with-deadline",
            at(nominal),
            command("true"),
            depends_on=[failing.task_id],
            dependency_deadline_ms=1500,
        )
        waits = create_task_with_policies(
            client, "rs-dep-waits", at(nominal), command("true"), depends_on=[failing.task_id]
        )

        up = final_execution(client, only_execution(client, upstream.task_id).execution_id)
        down = final_execution(client, only_execution(client, downstream.task_id).execution_id)
        failed_up = final_execution(client, only_execution(client, failing.task_id).execution_id)
        gave_up = final_execution(client, only_execution(client, with_deadline.task_id).execution_id)
        waiting = wait_for(
            lambda: (e := only_execution(client, waits.task_id)).waiting_reason and e,
            15,
            "the waiting run's reason",
        )
        still = client.get_execution(waiting.execution_id)
        client.cancel_execution(waiting.execution_id, reason="upstream failed for good")
        cancelled = final_execution(client, waiting.execution_id)

    assert up.state == common_pb2.EXECUTION_SUCCEEDED and _outcomes(up) == [
        "ATTEMPT_FAILED",
        "ATTEMPT_SUCCEEDED",
    ]
    assert down.state == common_pb2.EXECUTION_SUCCEEDED, down
    assert down.nominal_time_ms == up.nominal_time_ms == nominal
    assert [a.exit_code for a in down.attempts] == [0]  # one attempt, after the upstream's success
    assert down.attempts[0].started_at_ms >= up.attempts[-1].finished_at_ms

    assert failed_up.state == common_pb2.EXECUTION_FAILED
    assert gave_up.state == common_pb2.EXECUTION_FAILED and not gave_up.attempts, gave_up
    assert "dependencies unmet after 1500 ms" in gave_up.error and "rs-dep-failing-upstream" in gave_up.error
    # Without a deadline the run still waits after the other one gave up, and says for what.
    assert still.state == common_pb2.EXECUTION_PENDING and still.attempt == 0, still
    assert "waiting for rs-dep-failing-upstream" in still.waiting_reason
    assert "same logical date" in still.waiting_reason
    assert cancelled.state == common_pb2.EXECUTION_CANCELLED and not cancelled.attempts


# -- routing ----------------------------------------------------------------------------------------


def test_queue_and_label_routing_run_only_on_the_worker_that_serves_them(cluster: Cluster) -> None:
    """A task on a queue only w2 serves, and one requiring w2's label, run on w2 every time (w1, with
    more free slots, would be picked otherwise); a label no worker carries waits and expires."""
    with Client(cluster.servers, timeout_s=30) as client:
        by_queue = client.create_task("rs-route-queue", every("1s"), command("true"), queue=ROUTED_QUEUE)
        by_label = client.create_task("rs-route-label", every("1s"), command("true"), worker_labels=W2_LABELS)
        nobody = create_task_with_policies(
            client, "rs-route-nobody", every("1s"), command("true"), worker_labels={"zone": "red"},
            start_deadline_ms=1000,
        )  # fmt: skip
        # A run on a queue no worker serves yet waits, saying why, until a worker of that queue connects.
        late = client.create_task("rs-route-late", at(now_ms() + 300), command("true"), queue=LATE_QUEUE)
        try:
            waiting = wait_for(
                lambda: (e := only_execution(client, late.task_id)).waiting_reason and e,
                15,
                "the late-queue run's waiting reason",
            )
            assert waiting.state == common_pb2.EXECUTION_PENDING
            assert waiting.waiting_reason == f"no connected worker serves queue {LATE_QUEUE!r}"
            cluster.start_worker("w3", capacity=1, extra_args=("--queue", LATE_QUEUE))
            late_run = final_execution(client, waiting.execution_id)
            ran = {
                t.task_id: executions_where(
                    client,
                    t.task_id,
                    lambda xs: _count(xs, common_pb2.EXECUTION_SUCCEEDED) >= 3,
                    f"three runs of {t.spec.name}",
                )
                for t in (by_queue, by_label)
            }
            never = executions_where(
                client, nobody.task_id, lambda xs: _count(xs, common_pb2.EXECUTION_EXPIRED) >= 1, "an expiry"
            )
        finally:
            for t in (by_queue, by_label, nobody):
                client.cancel_task(t.task_id)
    for task_id, xs in ran.items():
        done = [e for e in xs if e.state == common_pb2.EXECUTION_SUCCEEDED]
        workers = {a.worker_id for e in done for a in e.attempts} | {e.worker_id for e in done}
        assert workers == {"w2"}, (task_id, workers)
    assert late_run.state == common_pb2.EXECUTION_SUCCEEDED and late_run.worker_id == "w3", late_run
    expired = [e for e in never if e.state == common_pb2.EXECUTION_EXPIRED]
    assert all(not e.attempts for e in never if e.state in TERMINAL_STATES)
    assert "no worker of queue 'default' carries labels zone=red" in expired[0].error, expired[0].error


# -- HTTP -------------------------------------------------------------------------------------------


class _Endpoint:
    """An HTTP server on a loopback address: answers `status` (503) to its first `failures` requests,
    then 200."""

    def __init__(self, host: str = "127.0.0.1", failures: int = 0, status: int = 503) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        received, lock = self.received, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    received.append((self.command, dict(self.headers), body))
                    answer = status if len(received) <= failures else 200
                reply = b"pong-%d" % len(received)
                self.send_response(answer)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/run"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_http_payload_on_a_worker_whose_policy_file_allows_loopback(cluster: Cluster) -> None:
    """w2's policy file (no --allow-http-loopback flag) lets its HTTP payloads reach 127.0.0.1: a 503 is a
    failed attempt with the status as exit code, retried, then a 200 succeeds with the identity headers.
    The file's deny rule refuses 127.0.0.2: nothing is sent, the run fails unretried."""
    allowed = _Endpoint(failures=1)
    denied = _Endpoint(host="127.0.0.2")
    try:
        with Client(cluster.servers, timeout_s=30) as client:
            soon = at(now_ms() + 300)
            ok = client.create_task(
                "rs-http-allowed",
                soon,
                http(allowed.url, method="POST", body="ping"),
                queue=ROUTED_QUEUE,
                max_attempts=3,
                retry=retry("200ms"),
            )
            refused = client.create_task(
                "rs-http-denied",
                soon,
                http(denied.url, method="POST", body="ping"),
                queue=ROUTED_QUEUE,
                max_attempts=3,
                retry=retry("200ms"),
            )
            ex = final_execution(client, only_execution(client, ok.task_id).execution_id)
            no = final_execution(client, only_execution(client, refused.task_id).execution_id)
    finally:
        allowed.close()
        denied.close()
    assert ex.state == common_pb2.EXECUTION_SUCCEEDED, ex
    assert [(a.outcome, a.exit_code, a.worker_id) for a in ex.attempts] == [
        (common_pb2.ATTEMPT_FAILED, 503, "w2"),
        (common_pb2.ATTEMPT_SUCCEEDED, 200, "w2"),
    ]
    assert ex.stdout_tail == b"pong-2"
    assert [(m, b) for m, _, b in allowed.received] == [("POST", b"ping")] * 2
    headers = allowed.received[1][1]
    assert headers["Cronraft-Execution-Id"] == ex.execution_id and headers["Cronraft-Attempt"] == "2"

    assert no.state == common_pb2.EXECUTION_FAILED, no
    assert _outcomes(no) == ["ATTEMPT_REFUSED"] and no.attempts[0].worker_id == "w2"
    assert "refused by worker w2" in no.error and "127.0.0.2 is in http.deny_networks" in no.error, no.error
    assert denied.received == []


def test_an_http_task_retries_only_the_statuses_it_lists(cluster: Cluster) -> None:
    """An http payload's exit code is its response status, so its retry lists hold statuses. Retrying
    only 503: an endpoint answering 503 twice, then 200, is asked three times and the run succeeds; one
    answering 404 (then 200, which a retry would have got) is asked once and the run fails,
    dead-lettered. A command payload listing 503 is refused by the API naming the field, and nothing is
    created."""
    busy = _Endpoint(failures=2)
    gone = _Endpoint(failures=1, status=404)
    policy = retry("200ms", retryable=[503])
    try:
        with Client(cluster.servers, timeout_s=30) as client:
            soon = at(now_ms() + 300)
            recovers = client.create_task(
                "rs-http-503", soon, http(busy.url, method="POST", body="x"), max_attempts=5, retry=policy
            )
            final = client.create_task(
                "rs-http-404", soon, http(gone.url, method="POST", body="x"), max_attempts=5, retry=policy
            )
            ex = final_execution(client, only_execution(client, recovers.task_id).execution_id)
            no = final_execution(client, only_execution(client, final.task_id).execution_id)
            letters = {d.execution_id: d for d in client.list_dead_letters()}

            bad = common_pb2.TaskSpec(name="rs-http-bad-codes", schedule=soon, payload=_sh("exit 0"))
            bad.retry.CopyFrom(policy)
            with pytest.raises(InvalidArgument) as info:
                client.create_task_spec(bad)
            names = [t.spec.name for t in client.list_tasks()]
    finally:
        busy.close()
        gone.close()
    assert ex.state == common_pb2.EXECUTION_SUCCEEDED, ex
    assert [(a.outcome, a.exit_code) for a in ex.attempts] == [
        (common_pb2.ATTEMPT_FAILED, 503),
        (common_pb2.ATTEMPT_FAILED, 503),
        (common_pb2.ATTEMPT_SUCCEEDED, 200),
    ]
    assert len(busy.received) == 3 and ex.stdout_tail == b"pong-3"
    assert not ex.dead_lettered and ex.execution_id not in letters

    assert no.state == common_pb2.EXECUTION_FAILED, no
    assert [(a.outcome, a.exit_code) for a in no.attempts] == [(common_pb2.ATTEMPT_FAILED, 404)]
    assert len(gone.received) == 1, gone.received
    assert "HTTP 404 Not Found (expected 2xx)" in no.error, no.error
    assert no.dead_lettered
    assert letters[no.execution_id].reason.endswith("exit code 404 is not among the retryable ones")

    assert info.value.field == "spec.retry.retryable_exit_codes[0]", info.value
    assert "503 is not an exit code (0-255): HTTP statuses apply to an http payload only" in str(info.value)
    assert "rs-http-bad-codes" not in names
