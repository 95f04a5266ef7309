"""The whole cluster down, then back, for every schedule kind: 3 real `schedd` nodes and a real worker.

All three nodes are stopped (SIGKILL in one scenario, SIGTERM in the other), stay down for several
nominal times of seconds-level schedules, and are started again; the worker keeps running meanwhile.
Each scenario sets every case up on one cluster before the outage and waits, after the restart, until
every case has played out; the tests then check, from the fire ledger (`explain_task`) and the
executions, what docs/scheduling.md promises:

- fixed rate, with and without jitter, under each misfire policy (`skip`, `fire_once`, `fire_all` with
  the default window, a short `catchup_window` and a `max_catchup`);
- a one-time `at` due during the outage (fires once after the restart: never dropped) and one due just
  after the restart (fires at its instant);
- a fixed-delay task whose next run came due during the outage (runs once late, the chain goes on);
- a 6-field cron with a calendar (skip) whose excluded times fall inside the outage: they stay
  `skipped_calendar` under every misfire policy, never `missed_downtime` and never fired;
- a window whose end_at falls inside the outage: completes, no run after end_at;
- a retry whose backoff ends during the outage (runs once after the restart) and a running attempt whose
  payload ended while the cluster was down (its result delivered after the restart, no second run);
- every node's `explain` agrees after convergence, and no nominal time has two executions.

The cluster is the module's, reused by both scenarios (stop all, wait, start all). The only sleep is the
outage itself, which is the scenario; every other wait is a condition polled with a deadline.
"""

from __future__ import annotations

import itertools
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from cronraft.client import Client, at, command, cron, delay, every, retry
from cronraft.proto.v1 import common_pb2
from cronraft.raft.firing import MISFIRE_THRESHOLD_MS
from cronraft.raft.records import TERMINAL_STATES
from cronraft.raft.schedule import jitter_offset_ms

from .harness import Cluster, Worker, started, wait_for
from .semantics import Stamps, fire_ledger, next_second, now_ms, outcome_name, runs_of, time_of_day

pytestmark = pytest.mark.integration

SUCCEEDED = common_pb2.EXECUTION_SUCCEEDED
DOWN_S = (
    6.0  # how long every node stays down: six nominal times of a 1 s schedule, > the 5 s misfire threshold
)
START_SLACK_MS = 20  # a payload's start before its due instant, by the same machine clock: rounding only
JITTER_MS = 800
SHORT_WINDOW_MS = 3000
MAX_CATCHUP = 2
DELAY_MS = 4500  # the fixed delay: its next run is planned past the kill, due in the outage
BACKOFF_MS = 5000  # the retry's initial backoff (jitter shortens it by up to 20 %): it ends in the outage


@dataclass
class Outage:
    """One scenario: the tasks it set up (by case name), and when the cluster was down."""

    sig: str
    stamps: Stamps  # the attempt payloads' start stamps and the gated run's gate
    tasks: dict[str, common_pb2.Task] = field(default_factory=dict)
    down_at: int = 0  # every node had exited by then
    restart_at: int = 0  # the first node was started again then
    up_at: int = 0  # a leader with every feature was ready then
    delay_planned: int = 0  # the fixed-delay task's next run, planned before the kill
    gated_execution: str = ""
    retry_execution: str = ""
    retry_not_before: int = 0
    at_after: int = 0
    excluded: tuple[int, int] = (0, 0)  # [lo, hi) the calendar excludes
    end_at: int = 0

    def task(self, case: str) -> common_pb2.Task:
        return self.tasks[case]

    def starts(self) -> Counter[tuple[str, int]]:
        """How many times each (execution id, attempt) started, as the payloads stamped it."""
        return Counter((eid, attempt) for eid, attempt, _ in self.stamps.starts())

    def in_outage(self, nominal: int) -> bool:
        """Due while no node ran: no fire of it can have been committed in time."""
        return self.down_at < nominal < self.restart_at


# -- the cluster and the scenarios ------------------------------------------------------------------


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory, module_clusters: list[Cluster]) -> Cluster:
    # A lease outlives the outage and the restart, so the worker neither fences its running attempt
    # nor has its lease expired before it reconnects (docs/guarantees.md, "whole cluster restart").
    c = Cluster(tmp_path_factory.mktemp("outage-kinds"), n=3, lease_ttl_ms=30_000)
    module_clusters.append(c)
    return started(c, workers=(Worker("w1", capacity=24),))


def _stop_all(c: Cluster, sig: int) -> None:
    """Signal every node at once and wait for each to exit."""
    with ThreadPoolExecutor(len(c.nodes)) as pool:
        list(pool.map(lambda n: c.kill(n, sig), c.nodes))


def _set_up_before_the_kill(client: Client, o: Outage) -> int:
    """Create every case; return the instant to stop the cluster at."""
    rate = {
        "skip": dict(misfire="skip"),
        "fire_once": dict(misfire="fire-once"),
        "fire_all": dict(misfire="fire-all"),
        "short_window": dict(misfire="fire-all", catchup_window=f"{SHORT_WINDOW_MS}ms"),
        "max_catchup": dict(misfire="fire-all", max_catchup=MAX_CATCHUP),
    }
    for case, kw in rate.items():
        o.tasks[case] = client.create_task(f"out-{o.sig}-{case}", every("1s"), command("true"), **kw)  # type: ignore[arg-type]
    for case, policy in (("jitter_skip", "skip"), ("jitter_fire_all", "fire-all")):
        o.tasks[case] = client.create_task(
            f"out-{o.sig}-{case}", every("1s", jitter=f"{JITTER_MS}ms"), command("true"), misfire=policy
        )
    o.tasks["delay"] = client.create_task(f"out-{o.sig}-delay", delay(f"{DELAY_MS}ms"), o.stamps.payload())
    o.tasks["retry"] = client.create_task(
        f"out-{o.sig}-retry",
        at(now_ms() + 200),
        o.stamps.payload(succeed_from=2),
        max_attempts=3,
        retry=retry(f"{BACKOFF_MS}ms"),
    )
    o.tasks["gated"] = client.create_task(
        f"out-{o.sig}-gated", at(now_ms() + 200), o.stamps.payload(gated=True)
    )

    def ready() -> bool:
        if not all(client.get_task(o.task(c).task_id).fire_count >= 1 for c in (*rate, "jitter_skip")):
            return False
        d = client.get_task(o.task("delay").task_id)
        (r,) = runs_of(client, o.task("retry").task_id)
        (g,) = runs_of(client, o.task("gated").task_id)
        o.delay_planned, o.retry_execution, o.gated_execution = d.next_fire_ms, r.execution_id, g.execution_id
        o.retry_not_before = r.not_before_ms
        return bool(
            d.next_fire_ms
            and len(r.attempts) == 1
            and r.state == common_pb2.EXECUTION_PENDING
            and (g.execution_id, 1) in o.starts()
        )

    wait_for(ready, 30, "first fires, a fixed-delay run ended, a retry in its backoff, the gated run started")
    kill_at = next_second(now_ms() + 300)
    # A calendar excluding three seconds inside the outage (not its first seconds: the fire planned before
    # the kill passes over no excluded time), wrapping past midnight avoided as in test_schedule_kinds.
    lo = kill_at + 2000
    if time_of_day(lo) > time_of_day(lo + 3000):
        pytest.skip("the excluded range would wrap past midnight")
    o.excluded = (lo, lo + 3000)
    cal = f"out-{o.sig}-quiet"
    client.put_calendar(
        common_pb2.Calendar(
            name=cal,
            time_zone="UTC",
            exclude=[
                common_pb2.CalendarRule(
                    time_of_day=common_pb2.TimeOfDayRange(start=time_of_day(lo), end=time_of_day(lo + 3000))
                )
            ],
        )
    )
    for case, policy in (("cal_skip", "skip"), ("cal_fire_once", "fire-once"), ("cal_fire_all", "fire-all")):
        o.tasks[case] = client.create_task(
            f"out-{o.sig}-{case}", cron("* * * * * *", calendars=[cal]), command("true"), misfire=policy
        )
    o.end_at = kill_at + 3500
    for case, policy in (("end_skip", "skip"), ("end_fire_all", "fire-all")):
        o.tasks[case] = client.create_task(
            f"out-{o.sig}-{case}", every("1s", end_at=o.end_at), command("true"), misfire=policy
        )
    o.tasks["at_during"] = client.create_task(
        f"out-{o.sig}-at-during", at(kill_at + 2500), o.stamps.payload()
    )
    # Due a while after the restart: the cluster is back by then (checked below).
    o.at_after = kill_at + int(DOWN_S * 1000) + 9000
    o.tasks["at_after"] = client.create_task(f"out-{o.sig}-at-after", at(o.at_after), o.stamps.payload())
    return kill_at


def _played_out(client: Client, o: Outage) -> Callable[[], bool]:
    """Every case has shown what it does after the restart."""
    after = o.up_at + 2000

    def done() -> bool:
        for case in ("skip", "fire_once", "fire_all", "short_window", "max_catchup", "jitter_skip",
                     "jitter_fire_all", "cal_skip", "cal_fire_once", "cal_fire_all"):  # fmt: skip
            if client.get_task(o.task(case).task_id).last_fired_nominal_ms <= after:
                return False
        for case in ("end_skip", "end_fire_all", "at_during", "at_after"):
            if client.get_task(o.task(case).task_id).state != common_pb2.TASK_COMPLETED:
                return False
        delayed = runs_of(client, o.task("delay").task_id)
        if not any(e.nominal_time_ms > o.delay_planned and e.state == SUCCEEDED for e in delayed):
            return False
        ex = [client.get_execution(x) for x in (o.retry_execution, o.gated_execution)]
        return all(e.state in TERMINAL_STATES for e in ex) and all(
            e.state in TERMINAL_STATES
            for c in ("at_during", "at_after")
            for e in runs_of(client, o.task(c).task_id)
        )

    return done


@pytest.fixture(scope="module", params=["SIGKILL", "SIGTERM"])
def outage(
    request: pytest.FixtureRequest, module_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Outage]:
    c = module_cluster
    sig: str = request.param
    root = tmp_path_factory.mktemp(f"outage-{sig}")
    o = Outage(sig.lower(), Stamps(root / "stamps", root / "gate"))
    try:
        c.wait_features()
        c.wait_converged(timeout_s=30)
        with Client(c.servers, timeout_s=30) as client:
            kill_at = _set_up_before_the_kill(client, o)
        wait_for(lambda: now_ms() >= kill_at, 10, "the instant to stop the cluster")
        _stop_all(c, getattr(signal, sig))
        o.down_at = now_ms()
        assert o.down_at < o.excluded[0], "the cluster was still up at the calendar's excluded times"
        assert o.down_at < o.delay_planned, "the fixed-delay run came due before the outage"
        assert o.down_at < o.retry_not_before, "the retry's backoff ended before the outage"
        o.stamps.open()  # the running payload ends while no node runs: its result waits in the worker
        time.sleep(DOWN_S)  # the outage itself, not synchronisation
        o.restart_at = now_ms()
        assert o.restart_at > max(o.delay_planned, o.retry_not_before), "due after the outage, not in it"
        for node in c.nodes:
            c.start_node(node)
        c.wait_features(timeout_s=40)
        o.up_at = now_ms()
        assert o.up_at < o.at_after - 2000, "the cluster came back too late for the at due after it"
        with Client(c.servers, timeout_s=30) as client:
            wait_for(_played_out(client, o), 60, "every case to play out after the restart")
            for t in o.tasks.values():
                if client.get_task(t.task_id).state == common_pb2.TASK_SCHEDULED:
                    client.cancel_task(t.task_id)
        c.wait_converged(timeout_s=30)
    except BaseException:
        o.stamps.open()
        print(c.logs())
        raise
    yield o


@pytest.fixture
def client(module_cluster: Cluster) -> Iterator[Client]:
    with Client(module_cluster.servers, timeout_s=30) as c:
        yield c


# -- the checks -------------------------------------------------------------------------------------


def _fired_in_outage(client: Client, o: Outage, case: str) -> list[int]:
    return [
        e.nominal_time_ms for e in runs_of(client, o.task(case).task_id) if o.in_outage(e.nominal_time_ms)
    ]


def _outage_records(client: Client, o: Outage, case: str) -> dict[int, common_pb2.FireRecord]:
    recs = {n: r for n, r in fire_ledger(client, o.task(case).task_id).items() if o.in_outage(n)}
    assert len(recs) >= 4, (case, recs)  # 6 s down: a nominal time every second
    return recs


def _missed(rec: common_pb2.FireRecord, policy: str) -> bool:
    return (
        outcome_name(rec) == "MISSED_DOWNTIME"
        and rec.reason.startswith(f"not fired in time; misfire_{policy}")
        and not rec.execution_id
    )


def _caught_up(rec: common_pb2.FireRecord) -> bool:
    """A fire committed more than the misfire threshold after its due time says it is a catch-up; one
    due during the restart and fired within the threshold is an ordinary fire."""
    late = rec.committed_at_ms - (rec.actual_ms or rec.nominal_time_ms)
    return ("catch-up after a misfire" in rec.reason) == (late > MISFIRE_THRESHOLD_MS)


def test_skip_records_every_time_of_the_outage_missed_and_fires_the_next(
    client: Client, outage: Outage
) -> None:
    o = outage
    for case in ("skip", "jitter_skip"):
        recs = _outage_records(client, o, case)
        assert all(_missed(r, "skip") for r in recs.values()), recs
        assert _fired_in_outage(client, o, case) == []
        # Back in its rhythm: every second after the restart fired (one execution each).
        after = [
            e.nominal_time_ms for e in runs_of(client, o.task(case).task_id) if e.nominal_time_ms > o.up_at
        ]
        assert after and after == list(range(after[0], after[-1] + 1, 1000)), (case, after)


def test_fire_once_fires_the_latest_missed_time_once(client: Client, outage: Outage) -> None:
    o = outage
    ledger = fire_ledger(client, o.task("fire_once").task_id)
    recs = _outage_records(client, o, "fire_once")
    runs = [e for e in runs_of(client, o.task("fire_once").task_id) if e.nominal_time_ms > o.down_at]
    latest = runs[0]  # the first fire after the outage
    rec = ledger[latest.nominal_time_ms]
    assert outcome_name(rec) == "FIRED" and rec.execution_id == latest.execution_id
    # The latest time that had passed when it fired: the next one was still ahead.
    assert rec.committed_at_ms - 1000 < latest.nominal_time_ms <= rec.committed_at_ms, rec
    missed = [n for n in recs if n < latest.nominal_time_ms]
    assert len(missed) >= 4 and all(_missed(recs[n], "fire_once") for n in missed), recs
    assert [e.nominal_time_ms for e in runs if e.nominal_time_ms in missed] == []


def test_fire_all_fires_each_missed_time_within_the_window_once(client: Client, outage: Outage) -> None:
    o = outage
    for case in ("fire_all", "jitter_fire_all"):
        task_id = o.task(case).task_id
        recs = _outage_records(client, o, case)
        runs = {e.nominal_time_ms: e for e in runs_of(client, task_id)}
        for n, r in recs.items():
            assert outcome_name(r) == "FIRED" and _caught_up(r), (case, r)
            assert r.execution_id == runs[n].execution_id and runs[n].state == SUCCEEDED, (case, runs.get(n))
        nominal = sorted(n for n in runs if n > o.down_at - 2000)
        assert nominal == list(range(nominal[0], nominal[-1] + 1, 1000)), f"{case}: a time lost {nominal}"
    for n, e in {e.nominal_time_ms: e for e in runs_of(client, o.task("jitter_fire_all").task_id)}.items():
        if not e.attempts:  # withdrawn unstarted by the test's cancel
            continue
        due = n + jitter_offset_ms(o.task("jitter_fire_all").task_id, n, JITTER_MS)
        assert e.attempts[0].started_at_ms >= due - START_SLACK_MS, (e, due)


def test_fire_all_honours_the_catchup_window_and_max_catchup(client: Client, outage: Outage) -> None:
    o = outage
    recs = _outage_records(client, o, "short_window")
    fired = [r for r in recs.values() if outcome_name(r) == "FIRED"]
    missed = [r for r in recs.values() if outcome_name(r) != "FIRED"]
    assert missed and all(_missed(r, "fire_all") for r in missed), recs
    # Each missed time is older than the window when its record was committed; each fired one is not.
    for r in missed:
        assert r.nominal_time_ms < r.committed_at_ms - SHORT_WINDOW_MS, r
    for r in fired:
        assert r.nominal_time_ms >= r.committed_at_ms - SHORT_WINDOW_MS, r
        assert _caught_up(r), r
    # max_catchup: exactly that many catch-up fires over the whole ledger, the rest of the outage missed.
    ledger = fire_ledger(client, o.task("max_catchup").task_id)
    catchups = [r for r in ledger.values() if "catch-up after a misfire" in r.reason]
    assert len(catchups) == MAX_CATCHUP and all(outcome_name(r) == "FIRED" for r in catchups), catchups
    recs = _outage_records(client, o, "max_catchup")
    others = [r for n, r in recs.items() if r not in catchups]
    assert all(_missed(r, "fire_all") for r in others), others
    assert len(_fired_in_outage(client, o, "max_catchup")) == sum(
        o.in_outage(r.nominal_time_ms) for r in catchups
    )


def test_a_one_time_task_due_in_the_outage_fires_once_after_it_and_one_due_after_fires_on_time(
    client: Client, outage: Outage
) -> None:
    o = outage
    starts = o.starts()
    for case in ("at_during", "at_after"):
        t = o.task(case)
        (e,) = runs_of(client, t.task_id)
        assert e.state == SUCCEEDED and [a.attempt for a in e.attempts] == [1], e
        assert e.nominal_time_ms == t.spec.schedule.at.at_ms
        assert starts[(e.execution_id, 1)] == 1
        (rec,) = fire_ledger(client, t.task_id).values()
        assert outcome_name(rec) == "FIRED" and rec.execution_id == e.execution_id, rec
        done = client.get_task(t.task_id)
        assert done.state == common_pb2.TASK_COMPLETED and done.fire_count == 1
    during = runs_of(client, o.task("at_during").task_id)[0]
    assert o.in_outage(during.nominal_time_ms) and during.fired_at_ms >= o.restart_at
    after = runs_of(client, o.task("at_after").task_id)[0]
    assert after.nominal_time_ms - START_SLACK_MS <= after.attempts[0].started_at_ms <= o.at_after + 2000


def test_a_fixed_delay_run_due_in_the_outage_runs_once_and_the_chain_goes_on(
    client: Client, outage: Outage
) -> None:
    o = outage
    t = o.task("delay")
    runs = runs_of(client, t.task_id)
    late = [e for e in runs if e.nominal_time_ms == o.delay_planned]
    assert len(late) == 1 and late[0].state == SUCCEEDED, runs
    assert late[0].fired_at_ms >= o.restart_at and o.in_outage(o.delay_planned)
    rec = fire_ledger(client, t.task_id)[o.delay_planned]
    assert outcome_name(rec) == "FIRED" and rec.execution_id == late[0].execution_id, rec
    done = [e for e in runs if e.state in TERMINAL_STATES]
    assert len(done) >= 3, runs
    for prev, nxt in itertools.pairwise(done):
        assert nxt.nominal_time_ms >= prev.completed_at_ms + DELAY_MS, (prev, nxt)
    assert client.get_task(t.task_id).state == common_pb2.TASK_CANCELLED  # went on until the test's cancel


def test_calendar_excluded_times_in_the_outage_stay_skipped_calendar(client: Client, outage: Outage) -> None:
    o = outage
    lo, hi = o.excluded
    excluded = list(range(lo, hi, 1000))
    for case, policy in (("cal_skip", "skip"), ("cal_fire_once", "fire_once"), ("cal_fire_all", "fire_all")):
        task_id = o.task(case).task_id
        ledger = fire_ledger(client, task_id)
        for n in excluded:
            rec = ledger.get(n)
            assert rec is not None and outcome_name(rec) == "SKIPPED_CALENDAR", (case, n, rec)
            assert f"calendar out-{o.sig}-quiet" in rec.reason and not rec.execution_id, (case, rec)
        fired = {e.nominal_time_ms for e in runs_of(client, task_id)}
        assert not fired & set(excluded), (case, sorted(fired))
        included = [n for n in _outage_records(client, o, case) if n not in excluded]
        assert included, case
        for n in included:
            rec = ledger[n]
            if policy == "fire_all":
                assert outcome_name(rec) == "FIRED" and n in fired, (case, rec)
            elif outcome_name(rec) != "FIRED":
                assert _missed(rec, policy), (case, rec)
        if policy == "skip":
            assert not fired & set(included), (case, sorted(fired))


def test_a_window_ending_in_the_outage_completes_without_a_run_after_its_end(
    client: Client, outage: Outage
) -> None:
    o = outage
    for case in ("end_skip", "end_fire_all"):
        t = o.task(case)
        runs = runs_of(client, t.task_id)
        assert runs and all(e.nominal_time_ms <= o.end_at for e in runs), (case, runs)
        ledger = fire_ledger(client, t.task_id)
        assert all(n <= o.end_at or outcome_name(r) == "OUTSIDE_WINDOW" for n, r in ledger.items()), ledger
        last = max(n for n in ledger if n <= o.end_at)
        assert o.in_outage(last), (case, last)
        done = client.get_task(t.task_id)
        assert done.state == common_pb2.TASK_COMPLETED and done.next_fire_ms == 0, done
        in_outage = [n for n in ledger if o.in_outage(n) and n <= o.end_at]
        want = "FIRED" if case == "end_fire_all" else "MISSED_DOWNTIME"
        assert in_outage and all(outcome_name(ledger[n]) == want for n in in_outage), (case, ledger)


def test_a_retry_due_in_the_outage_and_a_run_that_ended_in_it_each_run_once(
    client: Client, outage: Outage
) -> None:
    o = outage
    starts = o.starts()
    ex = client.get_execution(o.retry_execution)
    assert ex.state == SUCCEEDED, ex
    assert [(a.attempt, a.exit_code) for a in ex.attempts] == [(1, 1), (2, 0)], ex.attempts
    assert ex.attempts[1].started_at_ms >= o.restart_at, "attempt 2 ran before the cluster was back"
    assert starts[(ex.execution_id, 1)] == 1 and starts[(ex.execution_id, 2)] == 1, starts
    gated = client.get_execution(o.gated_execution)
    assert gated.state == SUCCEEDED and [a.attempt for a in gated.attempts] == [1], gated
    # It ended while every node was down; the result reached the cluster after the restart.
    assert o.down_at <= gated.attempts[0].finished_at_ms < o.restart_at, gated.attempts[0]
    assert gated.completed_at_ms >= o.restart_at
    assert starts[(gated.execution_id, 1)] == 1 and not starts[(gated.execution_id, 2)], starts


def test_every_node_explains_the_same_and_no_nominal_time_ran_twice(
    module_cluster: Cluster, client: Client, outage: Outage
) -> None:
    o = outage
    views = []
    for node in module_cluster.nodes:
        with Client(node.grpc_address, timeout_s=30) as one:
            views.append(
                {
                    case: [
                        r.SerializeToString() for r in one.explain_task(t.task_id, 1, now_ms(), 1000).records
                    ]
                    for case, t in o.tasks.items()
                }
            )
    assert views[0] == views[1] == views[2]
    assert all(views[0].values())
    for case, t in o.tasks.items():
        nominal = Counter(e.nominal_time_ms for e in runs_of(client, t.task_id) if not e.manual)
        assert max(nominal.values(), default=1) == 1, f"{case}: a nominal time fired twice: {nominal}"
        fired = {r.execution_id for r in fire_ledger(client, t.task_id).values() if r.execution_id}
        assert fired == {e.execution_id for e in runs_of(client, t.task_id)}, case
    assert max(o.starts().values()) == 1, o.starts()


# -- a calendar that rolls ---------------------------------------------------------------------------

MINUTE_MS = 60_000
DAY_MS = 86_400_000
# case: (calendar action, misfire policy) of a per-second cron whose calendar excludes one minute, today
# only: each of its seconds rolls a day (forward to tomorrow, or back to yesterday: before the previous
# fire, so not at all).
ROLL_CASES = {
    "roll_skip": ("roll-following", "skip"),
    "roll_once": ("roll-following", "fire-once"),
    "roll_back": ("roll-preceding", "skip"),
}


@dataclass
class RollOutage:
    minute: int  # the first instant of the excluded minute
    tasks: dict[str, common_pb2.Task] = field(default_factory=dict)
    down_at: int = 0
    restart_at: int = 0
    planned: dict[str, common_pb2.Task] = field(default_factory=dict)  # each task after its late fire


@pytest.fixture(scope="module")
def roll_outage(module_cluster: Cluster) -> Iterator[RollOutage]:
    """The whole cluster SIGKILLed three seconds before a minute its tasks' calendar excludes, down for
    DOWN_S: the outage holds two included seconds, then excluded ones, whose rolled instants are a day
    later (roll-following) or would pass the previous fire (roll-preceding). After the restart, waits
    until each task's late Fire has moved its plan past the outage, and reads the tasks then (before
    they are cancelled)."""
    c = module_cluster
    for node in c.nodes:  # a scenario that failed between its stop and its restart left them down
        if not node.alive:
            c.start_node(node)
    c.wait_features()
    c.wait_converged(timeout_s=30)
    minute = (now_ms() // MINUTE_MS + 1) * MINUTE_MS
    if minute - now_ms() < 8000:  # room to set the tasks up and see them fire before the kill
        minute += MINUTE_MS
    r = RollOutage(minute)
    when = datetime.fromtimestamp(minute / 1000, UTC)
    try:
        with Client(c.servers, timeout_s=30) as client:
            # A cron rule has minute granularity, and naming the day makes it today's only.
            rule = common_pb2.CalendarRule(cron=f"{when.minute} {when.hour} {when.day} {when.month} *")
            client.put_calendar(common_pb2.Calendar(name="out-roll-minute", time_zone="UTC", exclude=[rule]))
            for case, (action, policy) in ROLL_CASES.items():
                r.tasks[case] = client.create_task(
                    f"out-{case}",
                    cron("* * * * * *", calendars=["out-roll-minute"], calendar_action=action),
                    command("true"),
                    misfire=policy,
                )
            wait_for(
                lambda: all(client.get_task(t.task_id).fire_count >= 1 for t in r.tasks.values()),
                10,
                "each rolling task's first fire",
            )
        kill_at = minute - 3000
        wait_for(lambda: now_ms() >= kill_at, 70, "three seconds before the excluded minute")
        _stop_all(c, signal.SIGKILL)
        r.down_at = now_ms()
        # A fire commits up to fire_lead_ms (500 ms) ahead: the second before the minute - 2 s had not.
        assert r.down_at < minute - 2500, "the cluster was still up when minute - 2 s could fire ahead"
        time.sleep(DOWN_S)  # the outage itself, not synchronisation
        r.restart_at = now_ms()
        for node in c.nodes:
            c.start_node(node)
        c.wait_features(timeout_s=40)
        with Client(c.servers, timeout_s=30) as client:

            def planned() -> bool:
                r.planned = {case: client.get_task(t.task_id) for case, t in r.tasks.items()}
                return all(t.next_fire_ms >= minute for t in r.planned.values())

            wait_for(planned, 30, "each rolling task's late fire")
            for t in r.tasks.values():
                client.cancel_task(t.task_id)
        c.wait_converged(timeout_s=30)
    except BaseException:
        print(c.logs())
        raise
    yield r


def test_a_roll_calendars_times_in_an_outage_are_judged_at_their_rolled_instants(
    module_cluster: Cluster, client: Client, roll_outage: RollOutage
) -> None:
    """The seconds before the excluded minute were due in the outage: missed (fire_once fires the later
    one). The excluded seconds roll forward to tomorrow: still to come, not missed at all; the first is
    the task's next fire, due a day later (fire_once fired the latest nominal time, an excluded one, and
    every excluded second of the outage was missed_downtime). Rolled back, they would pass the previous
    fire: skipped_calendar, not missed_downtime, and the next minute comes next."""
    r = roll_outage
    e = r.minute
    before, excluded = [e - 2000, e - 1000], list(range(e, r.restart_at, 1000))
    assert r.down_at < before[0] and excluded, (r, excluded)
    ledgers = {case: fire_ledger(client, t.task_id) for case, t in r.tasks.items()}
    tasks = r.planned
    runs = {case: [x.nominal_time_ms for x in runs_of(client, t.task_id)] for case, t in r.tasks.items()}

    for case in ("roll_skip", "roll_once"):
        ledger, task = ledgers[case], tasks[case]
        assert not [n for n in ledger if e <= n < e + MINUTE_MS], (case, sorted(ledger))
        assert (task.next_fire_ms, task.next_due_ms) == (e, e + DAY_MS), (case, task)
        assert not [n for n in runs[case] if n >= e], (case, runs[case])
    assert all(_missed(ledgers["roll_skip"][n], "skip") for n in before), ledgers["roll_skip"]
    assert not [n for n in runs["roll_skip"] if n >= before[0]], runs["roll_skip"]
    once = ledgers["roll_once"]
    assert _missed(once[e - 2000], "fire_once") and outcome_name(once[e - 1000]) == "FIRED", once
    assert [n for n in runs["roll_once"] if n >= before[0]] == [e - 1000], runs["roll_once"]

    back = ledgers["roll_back"]
    assert all(_missed(back[n], "skip") for n in before), back
    for n in excluded:
        assert outcome_name(back[n]) == "SKIPPED_CALENDAR", (n, back[n])
        assert back[n].reason.endswith("rolling back would pass the previous fire"), back[n]
    assert tasks["roll_back"].next_fire_ms == e + MINUTE_MS, tasks["roll_back"]
    assert not [n for n in runs["roll_back"] if before[0] <= n < e + MINUTE_MS], runs["roll_back"]

    views = []
    for node in module_cluster.nodes:
        with Client(node.grpc_address, timeout_s=30) as one:
            views.append(
                [
                    [x.SerializeToString() for x in one.explain_task(t.task_id, 1, now_ms(), 1000).records]
                    for t in r.tasks.values()
                ]
            )
    assert views[0] == views[1] == views[2]
