"""Overlap policies, max_concurrency and priorities with real processes: a 3-node cluster, real workers,
real commands, each promise of docs/scheduling.md ("Overlap") checked as a user sees it (the executions
listed, their states, the fire ledger of `explain_task`) and as the commands themselves saw it.

Every payload is gated (semantics.Gate): it stamps its start, waits for its task's gate file (which the
test creates once it has seen what it wanted while the runs were held), then stamps its end. So a run
lasts as long as the test needs, whatever the machine's speed, and a run that was killed never stamps
its end, even after its gate opens. Stamps use CLOCK_MONOTONIC, one clock for every process of the machine.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cronraft.client import Client, at, every
from cronraft.errors import FailedPrecondition
from cronraft.proto.v1 import common_pb2

from .harness import Cluster, Worker, started, wait_for
from .semantics import Gate, Stamp, now_ms, outcome_name, process_alive, runs_of

pytestmark = pytest.mark.integration

PENDING = common_pb2.EXECUTION_PENDING
SUCCEEDED = common_pb2.EXECUTION_SUCCEEDED
CANCELLED = common_pb2.EXECUTION_CANCELLED


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory, module_clusters: list[Cluster]) -> Cluster:
    c = Cluster(tmp_path_factory.mktemp("overlap"), n=3)
    module_clusters.append(c)
    # The priority test's worker: one slot, its own queue, so that it is saturated by one run.
    prio = Worker("w-prio", capacity=1, extra_args=("--queue", "prio"))
    return started(c, workers=(Worker("w1", capacity=8), prio))


@pytest.fixture
def client(module_cluster: Cluster) -> Iterator[Client]:
    with Client(module_cluster.servers, timeout_s=30) as c:
        yield c


@pytest.fixture
def gates(tmp_path: Path) -> Iterator[Callable[[str], Gate]]:
    """Gates by name; every one is opened at the end, so no payload outlives its test by its wait."""
    made: list[Gate] = []

    def make(name: str) -> Gate:
        # Asked to stop, a run stamps it and takes 1 s to, as a payload that cleans up does.
        g = Gate(tmp_path / f"{name}.stamps", tmp_path / f"{name}.gate", stop_s=1.0)
        made.append(g)
        return g

    yield make
    for g in made:
        g.open()


def _ledger(client: Client, task_id: str) -> list[common_pb2.FireRecord]:
    """The task's fire ledger, including the records of nominal times still ahead."""
    ahead = now_ms() + 86_400_000
    return list(client.explain_task(task_id, to=ahead, limit=1000).records)


def _fired_outcomes(client: Client, task_id: str, max_runs: int) -> list[common_pb2.FireRecord]:
    """The ledger of a task its max_runs completed, without its last record: the nominal time after the
    last fire, `outside_window` (checked here), which says why it stopped."""
    *records, last = _ledger(client, task_id)
    assert outcome_name(last) == "OUTSIDE_WINDOW" and last.reason == f"max_runs {max_runs} reached", last
    return records


def _states(execs: list[common_pb2.Execution]) -> list[str]:
    return [common_pb2.ExecutionState.Name(e.state) for e in execs]


def _all_ended(client: Client, task_id: str, count: int) -> list[common_pb2.Execution] | None:
    """The task's executions once it is done firing (completed by max_runs) and `count` of them ended."""
    if client.get_task(task_id).state != common_pb2.TASK_COMPLETED:
        return None
    execs = runs_of(client, task_id)
    ended = [e for e in execs if e.completed_at_ms]
    return execs if len(execs) == count and len(ended) == count else None


def _one_at_a_time(runs: dict[str, Stamp], order: list[str]) -> None:
    """The runs of `order` (oldest nominal time first) ran one after another in that order: each started
    after the previous one ended."""
    for prev, nxt in itertools.pairwise(order):
        end = runs[prev].end_ns
        assert end is not None, f"{prev} never ended"
        assert runs[nxt].start_ns > end, f"{nxt} started before {prev} ended: not one after another"


def test_skip_records_the_fires_during_a_run_and_never_runs_two_at_once(
    client: Client, gates: Callable[[str], Gate]
) -> None:
    g = gates("skip")
    task = client.create_task("ov-skip", every("1s", max_runs=2), g.payload(), overlap="skip")
    first = wait_for(lambda: next(iter(g.runs()), None), 30, "the first run to start")
    # A manual run does not bypass the policy either.
    with pytest.raises(FailedPrecondition, match="overlap policy skips"):
        client.trigger_task(task.task_id)

    def two_skipped() -> list[common_pb2.FireRecord] | None:
        skipped = [r for r in _ledger(client, task.task_id) if outcome_name(r) == "SKIPPED_OVERLAP"]
        return skipped if len(skipped) >= 3 else None  # two nominal times and the trigger

    # Nominal times pass while it runs: each is skipped, naming the run that is still active.
    skipped = wait_for(two_skipped, 30, "two fires skipped by the overlap policy")
    execs = runs_of(client, task.task_id)
    assert [e.execution_id for e in execs] == [first], "a skipped fire made an execution"
    for rec in skipped:
        assert rec.execution_id == "" and first in rec.reason, rec
    g.open()
    execs = wait_for(lambda: _all_ended(client, task.task_id, 2), 30, "the run after the skipped fires")
    assert _states(execs) == ["EXECUTION_SUCCEEDED"] * 2
    runs = g.runs()
    assert set(runs) == {e.execution_id for e in execs}
    _one_at_a_time(runs, [e.execution_id for e in execs])
    # The ledger of the schedule's times (the trigger's record is at its own instant, off the whole
    # seconds, unless it fell on one: then both skipped the same time): the first fire, every time
    # while it ran skipped, then the next fire.
    ledger = [
        r
        for r in _fired_outcomes(client, task.task_id, 2)
        if (r.nominal_time_ms - execs[0].nominal_time_ms) % 1000 == 0
    ]
    outcomes = [outcome_name(r) for r in ledger]
    assert outcomes[0] == "FIRED" and outcomes[-1] == "FIRED", outcomes
    assert set(outcomes[1:-1]) == {"SKIPPED_OVERLAP"} and len(outcomes) >= 4, outcomes
    assert [r.execution_id for r in ledger if r.execution_id] == [e.execution_id for e in execs]
    nominal = [r.nominal_time_ms for r in ledger]
    assert all(b - a == 1000 for a, b in itertools.pairwise(nominal)), nominal


def test_buffer_one_keeps_one_waiting_run_drops_the_rest_and_runs_it_after(
    client: Client, gates: Callable[[str], Gate]
) -> None:
    g = gates("buffer-one")
    task = client.create_task("ov-buffer-one", every("1s", max_runs=3), g.payload(), overlap="buffer_one")
    first = wait_for(lambda: next(iter(g.runs()), None), 30, "the first run to start")

    def two_dropped() -> list[common_pb2.FireRecord] | None:
        dropped = [r for r in _ledger(client, task.task_id) if outcome_name(r) == "BUFFER_DROPPED"]
        return dropped if len(dropped) >= 2 else None

    dropped = wait_for(two_dropped, 30, "two fires dropped while one waits")
    execs = runs_of(client, task.task_id)
    # One run, one waiting (the oldest fire after it: buffer_one keeps the first, drops later ones).
    assert _states(execs) == ["EXECUTION_RUNNING", "EXECUTION_BUFFERED"], execs
    waiting = execs[1]
    assert execs[0].execution_id == first
    assert waiting.nominal_time_ms == execs[0].nominal_time_ms + 1000
    assert all(r.nominal_time_ms > waiting.nominal_time_ms and r.execution_id == "" for r in dropped)
    assert list(g.runs()) == [first], "the buffered run started while the first still ran"
    g.open()
    execs = wait_for(lambda: _all_ended(client, task.task_id, 3), 30, "the buffered run and the next fire")
    assert _states(execs) == ["EXECUTION_SUCCEEDED"] * 3
    assert execs[1].execution_id == waiting.execution_id
    runs = g.runs()
    _one_at_a_time(runs, [e.execution_id for e in execs])
    outcomes = [outcome_name(r) for r in _fired_outcomes(client, task.task_id, 3)]
    assert outcomes.count("FIRED") == 3 and set(outcomes) == {"FIRED", "BUFFER_DROPPED"}, outcomes


def test_buffer_all_runs_every_fire_one_after_another_oldest_first(
    client: Client, gates: Callable[[str], Gate]
) -> None:
    g = gates("buffer-all")
    task = client.create_task("ov-buffer-all", every("1s", max_runs=4), g.payload(), overlap="buffer_all")
    first = wait_for(lambda: next(iter(g.runs()), None), 30, "the first run to start")

    def three_waiting() -> list[common_pb2.Execution] | None:
        execs = runs_of(client, task.task_id)
        return execs if len(execs) == 4 else None

    execs = wait_for(three_waiting, 30, "three fires waiting behind the first run")
    assert _states(execs) == ["EXECUTION_RUNNING"] + ["EXECUTION_BUFFERED"] * 3, execs
    assert execs[0].execution_id == first
    assert list(g.runs()) == [first]
    g.open()
    ended = wait_for(lambda: _all_ended(client, task.task_id, 4), 30, "every buffered run")
    assert _states(ended) == ["EXECUTION_SUCCEEDED"] * 4
    assert [e.execution_id for e in ended] == [e.execution_id for e in execs]
    runs = g.runs()
    # Oldest nominal time first, never two at once.
    _one_at_a_time(runs, [e.execution_id for e in ended])
    outcomes = [outcome_name(r) for r in _fired_outcomes(client, task.task_id, 4)]
    assert outcomes == ["FIRED"] * 4, outcomes


def _older_and_newer(
    client: Client, task_id: str, g: Gate
) -> tuple[common_pb2.Execution, common_pb2.Execution, dict[str, Stamp]]:
    """Once the second fire's run has started: the first execution (ended), the second, the stamps."""

    def newer_started() -> tuple[common_pb2.Execution, common_pb2.Execution, dict[str, Stamp]] | None:
        execs = runs_of(client, task_id)
        runs = g.runs()
        if len(execs) == 2 and execs[1].execution_id in runs and execs[0].completed_at_ms:
            return execs[0], execs[1], runs
        return None

    return wait_for(newer_started, 30, "the newer run to start and the older to end")


def test_cancel_other_stops_the_running_one_supersedes_the_waiting_one_then_starts_the_newest(
    client: Client, gates: Callable[[str], Gate]
) -> None:
    """Fires at T, T+1 s, T+2 s, T+3 s, each run taking 1.5 s to stop once asked: T's run is asked to stop
    at T+1 s and T+1 s's waits; at T+2 s T's run is still stopping, so T+1 s's is superseded (never runs)
    and T+2 s's waits, to start once T's has ended; T+3 s cancels it the same way and runs last."""
    g = gates("cancel-other")
    task = client.create_task(
        "ov-cancel-other", every("1s", max_runs=4), g.payload(stop_s=1.5), overlap="cancel_other"
    )

    def last_started() -> list[common_pb2.Execution] | None:
        execs = runs_of(client, task.task_id)
        return execs if len(execs) == 4 and execs[3].execution_id in g.runs() else None

    wait_for(last_started, 30, "the last fire's run to start")
    g.open()
    execs = wait_for(lambda: _all_ended(client, task.task_id, 4), 30, "every execution to end")
    a, b, c, d = execs
    runs = g.runs()
    assert _states(execs) == ["EXECUTION_CANCELLED"] * 3 + ["EXECUTION_SUCCEEDED"], execs
    # The running ones were asked to stop by the next fire, and ended when their processes had stopped.
    for older, newer in ((a, b), (c, d)):
        assert older.cancel_requested_at_ms == newer.fired_at_ms, (older, newer)
        assert "cancel_other" in older.cancel_reason, older.cancel_reason
        stopped = runs[older.execution_id]
        assert stopped.term_ns and stopped.exit_ns and stopped.end_ns is None, stopped
        assert not process_alive(stopped.pid)
    # The waiting one was superseded by the next fire and never ran.
    assert b.execution_id not in runs and b.completed_at_ms == c.fired_at_ms, b
    assert "superseded" in b.error and not b.attempts, b
    # The newest one started only once the one asked to stop had ended: never two processes at once.
    stop_a, stop_c = runs[a.execution_id].exit_ns, runs[c.execution_id].exit_ns
    assert stop_a and stop_c
    assert runs[c.execution_id].start_ns > stop_a and runs[d.execution_id].start_ns > stop_c
    assert c.started_at_ms >= a.completed_at_ms and d.started_at_ms >= c.completed_at_ms
    assert runs[d.execution_id].end_ns is not None
    assert [outcome_name(r) for r in _fired_outcomes(client, task.task_id, 4)] == ["FIRED"] * 4


def test_terminate_other_ends_the_running_one_at_once_and_kills_it(
    client: Client, gates: Callable[[str], Gate]
) -> None:
    g = gates("terminate-other")
    task = client.create_task(
        "ov-terminate-other", every("2s", max_runs=2), g.payload(), overlap="terminate_other"
    )
    first = wait_for(lambda: next(iter(g.runs()), None), 30, "the first run to start")
    older, newer, runs = _older_and_newer(client, task.task_id, g)
    assert older.execution_id == first
    # Ended by the newer fire's own command, not by its worker's report.
    assert older.state == CANCELLED and older.completed_at_ms == newer.fired_at_ms, (older, newer)
    assert "terminate_other" in older.error, older.error
    wait_for(lambda: not process_alive(runs[first].pid), 10, "the terminated process to be killed")
    stopped = g.runs()[first]
    assert stopped.term_ns and stopped.exit_ns and stopped.end_ns is None, stopped
    # The new one started at once, while the old process still took its second to stop.
    assert runs[newer.execution_id].start_ns < stopped.exit_ns, "the new run waited for the old one to stop"
    g.open()
    wait_for(lambda: client.get_execution(newer.execution_id).state == SUCCEEDED, 30, "the new run")
    assert g.runs()[first].end_ns is None, "the terminated process ran on after its gate opened"
    # Its worker's late report (a stale token) changed nothing.
    after = client.get_execution(first)
    assert after.state == CANCELLED and after.completed_at_ms == older.completed_at_ms
    assert "terminate_other" in after.error
    assert [outcome_name(r) for r in _fired_outcomes(client, task.task_id, 2)] == ["FIRED", "FIRED"]


def test_allow_all_runs_the_fires_concurrently(client: Client, gates: Callable[[str], Gate]) -> None:
    g = gates("allow-all")
    task = client.create_task("ov-allow-all", every("1s", max_runs=3), g.payload(), overlap="allow_all")

    def three_at_once() -> list[common_pb2.Execution] | None:
        runs = g.runs()
        execs = runs_of(client, task.task_id)
        started = [e for e in execs if e.execution_id in runs]
        return execs if len(started) == 3 else None

    execs = wait_for(three_at_once, 30, "three runs at once")
    assert _states(execs) == ["EXECUTION_RUNNING"] * 3
    assert all(s.end_ns is None for s in g.runs().values())
    assert all(process_alive(s.pid) for s in g.runs().values())
    g.open()
    ended = wait_for(lambda: _all_ended(client, task.task_id, 3), 30, "the three runs")
    assert _states(ended) == ["EXECUTION_SUCCEEDED"] * 3
    assert [outcome_name(r) for r in _fired_outcomes(client, task.task_id, 3)] == ["FIRED"] * 3


def test_max_concurrency_holds_further_fires_pending_until_a_slot_frees(
    client: Client, gates: Callable[[str], Gate]
) -> None:
    g = gates("max-concurrency")
    task = client.create_task("ov-max-concurrency", every("1s", max_runs=4), g.payload(), max_concurrency=2)

    def two_held() -> list[common_pb2.Execution] | None:
        execs = runs_of(client, task.task_id)
        held = [e for e in execs if e.state == PENDING and "max_concurrency 2" in e.waiting_reason]
        return execs if len(execs) == 4 and len(held) == 2 else None

    execs = wait_for(two_held, 30, "two fires waiting for the task's max_concurrency")
    # The worker has 8 free slots: only the task's limit holds the later fires back.
    assert _states(execs) == ["EXECUTION_RUNNING"] * 2 + ["EXECUTION_PENDING"] * 2, execs
    assert sorted(g.runs()) == sorted(e.execution_id for e in execs[:2])
    g.open()
    ended = wait_for(lambda: _all_ended(client, task.task_id, 4), 30, "every run")
    assert _states(ended) == ["EXECUTION_SUCCEEDED"] * 4
    runs = g.runs()
    assert set(runs) == {e.execution_id for e in ended}
    # Never more than two processes at once: a start while two others had not ended breaks the limit.
    for eid, s in runs.items():
        during = [
            o
            for o, t in runs.items()
            if o != eid and t.start_ns < s.start_ns and (t.end_ns or 0) > s.start_ns
        ]
        assert len(during) <= 1, f"{eid} started while {during} ran"
    assert [outcome_name(r) for r in _fired_outcomes(client, task.task_id, 4)] == ["FIRED"] * 4


def test_a_saturated_worker_takes_the_high_priority_run_before_an_older_low_one(
    client: Client, gates: Callable[[str], Gate]
) -> None:
    blocker_gate, low_gate, high_gate = gates("prio-blocker"), gates("prio-low"), gates("prio-high")
    low_gate.open()
    high_gate.open()
    now = int(time.time() * 1000)
    client.create_task("ov-prio-blocker", at(now), blocker_gate.payload(), queue="prio")
    wait_for(lambda: blocker_gate.runs() or None, 30, "the blocker to hold the worker's only slot")
    low = client.create_task("ov-prio-low", at(now), low_gate.payload(), queue="prio", priority="low")
    wait_for(
        lambda: [e for e in client.list_executions(low.task_id) if e.state == PENDING] or None,
        30,
        "low pending",
    )
    high = client.create_task("ov-prio-high", at(now), high_gate.payload(), queue="prio", priority="high")
    wait_for(
        lambda: [e for e in client.list_executions(high.task_id) if e.state == PENDING] or None,
        30,
        "high pending",
    )
    assert not low_gate.runs() and not high_gate.runs()
    blocker_gate.open()

    def both_done() -> tuple[Stamp, Stamp] | None:
        lo, hi = low_gate.runs(), high_gate.runs()
        if len(lo) == 1 and len(hi) == 1:
            s_lo, s_hi = next(iter(lo.values())), next(iter(hi.values()))
            if s_lo.end_ns and s_hi.end_ns:
                return s_lo, s_hi
        return None

    s_low, s_high = wait_for(both_done, 30, "both runs")
    assert s_high.end_ns is not None
    assert s_low.start_ns > s_high.end_ns, "the older low-priority run went first"
    assert client.get_execution(next(iter(blocker_gate.runs()))).state == SUCCEEDED
