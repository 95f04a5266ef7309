"""Scheduling semantics with real processes: misfire policies after the whole cluster was down, an edit
during a run, pause/resume, trigger and the fire ledger as a user reads it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cronraft.client import Client, command, cron, delay
from cronraft.proto.v1 import common_pb2

from .harness import Cluster, ledger_command, read_ledger, started, wait_for
from .semantics import outcome_name

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of the test's own, for a test that stops its nodes."""
    c = Cluster(tmp_path, n=3)
    try:
        yield started(c)
    finally:
        c.stop()


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory, module_clusters: list[Cluster]) -> Cluster:
    """One cluster for the tests that leave it running (each with its own task names)."""
    c = Cluster(tmp_path_factory.mktemp("scheduling"), n=3)
    module_clusters.append(c)
    return started(c)


@pytest.fixture
def shared_cluster(module_cluster: Cluster) -> Cluster:
    return module_cluster


def _outcomes(client: Client, task_id: str, lo: int, hi: int) -> dict[int, str]:
    resp = client.explain_task(task_id, from_=lo, to=hi, limit=1000)
    return {r.nominal_time_ms: outcome_name(r) for r in resp.records}


def test_each_misfire_policy_after_the_whole_cluster_was_down(cluster: Cluster, tmp_path: Path) -> None:
    ledgers = {p: tmp_path / f"ledger-{p}" for p in ("skip", "fire-once", "fire-all")}
    with Client(cluster.servers, timeout_s=30) as client:
        tasks = {
            p: client.create_task(
                f"every-second-{p}",
                cron("* * * * * *"),
                command(*ledger_command(ledgers[p])),
                misfire=p,
                catchup_window="2m",
                max_catchup=1000,
            )
            for p in ledgers
        }
        wait_for(lambda: all(len(read_ledger(f)) >= 2 for f in ledgers.values()), 30, "first runs")
    for node in cluster.nodes:
        cluster.kill(node)
    down_from = int(time.time() * 1000)
    time.sleep(8)  # the outage itself, not synchronisation: nominal times must pass with no leader
    for node in cluster.nodes:
        cluster.start_node(node)
    cluster.wait_leader(timeout_s=40)
    up_at = int(time.time() * 1000)
    with Client(cluster.servers, timeout_s=30) as client:
        # Wait until every task fired a nominal time after the restart, then stop them.
        def resumed() -> bool:
            return all(
                client.get_task(t.task_id).last_fired_nominal_ms > up_at + 1000 for t in tasks.values()
            )

        wait_for(resumed, 60, "fires after the restart")
        for t in tasks.values():
            client.cancel_task(t.task_id)
        window = (down_from + 2000, up_at - 2000)  # nominal times that surely passed with no leader
        outcome = {p: _outcomes(client, t.task_id, *window) for p, t in tasks.items()}
    expected_missed = (window[1] - window[0]) // 1000
    assert expected_missed >= 3
    skip = list(outcome["skip"].values())
    assert skip and set(skip) == {"MISSED_DOWNTIME"}, outcome["skip"]
    once = list(outcome["fire-once"].values())
    assert once.count("FIRED") <= 1 and "MISSED_DOWNTIME" in once
    everything = outcome["fire-all"]
    assert len(everything) >= expected_missed and set(everything.values()) == {"FIRED"}, everything


def test_an_edit_during_a_run_keeps_the_run_and_applies_from_the_next_time(shared_cluster: Cluster) -> None:
    with Client(shared_cluster.servers, timeout_s=30) as client:
        task = client.create_task("slow", cron("*/2 * * * * *"), command("sleep", "3"), overlap="skip")
        running = wait_for(
            lambda: [
                e for e in client.list_executions(task.task_id) if e.state == common_pb2.EXECUTION_RUNNING
            ],
            30,
            "a running execution",
        )[0]
        edited_at = int(time.time() * 1000)
        edited = client.edit_task(task.task_id, schedule=cron("0 0 1 1 *"))
        assert edited.next_fire_ms > edited_at + 86_400_000  # the next 1 January, not a time in the past
        done = wait_for(
            lambda: (
                (e := client.get_execution(running.execution_id)).state != common_pb2.EXECUTION_RUNNING and e
            ),
            30,
            "the in-flight run to end",
        )
        assert done.state == common_pb2.EXECUTION_SUCCEEDED
        late = [e for e in client.list_executions(task.task_id) if e.nominal_time_ms > edited_at + 1000]
        assert late == [], "the old schedule fired after the edit"


def test_a_fixed_delay_task_runs_again_after_each_run_ends(shared_cluster: Cluster) -> None:
    """Each run plans the next one (its end + the delay) in the Complete that ends it: the leader must
    learn that due time from the Complete's result, since it is behind the part of the due index it has
    loaded already (a leader that did not ran the task once, then never again)."""
    with Client(shared_cluster.servers, timeout_s=30) as client:
        task = client.create_task("every-end", delay("1s"), command("true"))
        runs = wait_for(
            lambda: (
                ended
                if len(
                    ended := [
                        e
                        for e in client.list_executions(task.task_id)
                        if e.state == common_pb2.EXECUTION_SUCCEEDED
                    ]
                )
                >= 3
                else None
            ),
            30,
            "three runs of the fixed-delay task",
        )
        starts = sorted(e.nominal_time_ms for e in runs)
        ends = sorted(e.completed_at_ms for e in runs)
        # Never two at once: each nominal time is at least the delay after the previous run ended.
        for prev_end, nxt in zip(ends, starts[1:], strict=False):
            assert nxt >= prev_end + 1000


def test_pause_resume_and_trigger_with_the_ledger_explaining_each_time(
    shared_cluster: Cluster, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    with Client(shared_cluster.servers, timeout_s=30) as client:
        task = client.create_task("tick", cron("* * * * * *"), command(*ledger_command(ledger)))
        wait_for(lambda: len(read_ledger(ledger)) >= 1, 30, "a first run")
        paused = client.pause_task(task.task_id, note="maintenance window")
        assert paused.state == common_pb2.TASK_PAUSED
        paused_at = paused.paused_at_ms
        ran_before = len(read_ledger(ledger))
        manual = client.trigger_task(task.task_id)
        assert manual.manual
        wait_for(
            lambda: client.get_execution(manual.execution_id).state == common_pb2.EXECUTION_SUCCEEDED,
            30,
            "trigger",
        )
        time.sleep(3)  # let nominal times pass while paused (the scenario, not synchronisation)
        resumed = client.resume_task(task.task_id)
        assert resumed.state == common_pb2.TASK_SCHEDULED
        wait_for(
            lambda: client.get_task(task.task_id).last_fired_nominal_ms > resumed.updated_at_ms,
            30,
            "a fire after resume",
        )
        client.cancel_task(task.task_id)
        outcomes = _outcomes(client, task.task_id, paused_at + 1000, resumed.updated_at_ms - 1000)
    assert outcomes and set(outcomes.values()) <= {"PAUSED", "MANUAL"}
    assert "PAUSED" in outcomes.values()
    # Only the manual run happened while paused.
    during = [n for _, n, _ in read_ledger(ledger)][ran_before:]
    assert manual.nominal_time_ms in during
