"""Cron across DST transitions and odd clocks, on real processes (docs/scheduling.md, "Time zones and
DST"; docs/guarantees.md, "Clock skew").

Each transition gets a 3-node cluster and a worker whose wall clocks (PyPI libfaketime; the monotonic
clock untouched, shared/docs/fault-testing.md 3.5) run a fixed offset ahead, the same for every process,
so that their "now" is a few seconds before a Europe/Paris offset change when the tasks are created:
- spring forward, 2027-03-28T01:00:00Z: 02:00 CET -> 03:00 CEST (local 02:00-02:59:59 does not exist);
- fall back, 2027-10-31T01:00:00Z: 03:00 CEST -> 02:00 CET (local 02:00-02:59:59 happens twice).
A fixed offset, not a clock jump at run time: every process reads one clock from its first instant, so
the clock probes measure 0 and nothing but the transition is odd. Seconds-level crons whose hour field
names the hour that vanishes or repeats fire within seconds of it.

Per task, what must hold is written down from the documented rules (cronie's: a fixed-time job's gap
time fires once at the first instant after the gap, `dst_shifted`; an elapsed-time job follows the new
clock; in a fold a fixed-time job fires the first occurrence, an elapsed-time one both; `--dst-gap`,
`--dst-fold` override), not computed with the product's functions, and is compared with: the executions
(nominal times, each once, started on time), the fire ledger (outcomes), the payloads' own record (each
ran once), the task's next fire after the window, and what `schedctl schedule preview` (offline) and
`schedctl task preview` (the stored task) announced before the transition. The leader must neither
spin across the transition (its CPU share) nor stall (every fire started within 2 s of its due time, the
same leader throughout).

The last test is the odd clock: one follower's wall clock 3 s ahead while a per-second cron runs across
a kill of the leader, with that follower elected next: every nominal second
fires exactly once, and none starts early by the skew (test_clock.py covers a skewed leader and one-time
fires, not a failover under a cron).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cronraft.client import Client, command, cron
from cronraft.client.cli import main as schedctl_main
from cronraft.proto.v1 import common_pb2

from .harness import Cluster, faketime_env, ledger_command, read_ledger, wait_for
from .semantics import cpu_seconds, first_started_ms, outcome_name

pytestmark = pytest.mark.integration

PARIS = "Europe/Paris"
SPRING_MS = 1_806_195_600_000  # 2027-03-28T01:00:00Z: 02:00 CET -> 03:00 CEST
FALL_MS = 1_824_944_400_000  # 2027-10-31T01:00:00Z: 03:00 CEST -> 02:00 CET
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
# The fake clock at the nodes' start: the transition this far ahead. A 3-node start with a worker takes
# 3-6 s here; the tasks must exist at least MIN_AHEAD_MS before the transition (two 5 s fires before it).
LEAD_S = 14.0
MIN_AHEAD_MS = 6_000
# The window looked at: nominal times up to WINDOW_AFTER_MS past the transition.
WINDOW_AFTER_MS = 5_000
ON_TIME_MS = 2_000  # a start later than this after its due time is a stall (the machine idles otherwise)
START_SLACK_MS = 20  # a held start is released at its due instant (same machine clock for all)
# An idle leader with these few tasks uses a few hundredths of a core; a spin (the wheel putting a task
# back at a passed instant each tick, 6086062) takes most of one.
MAX_LEADER_SHARE = 0.4

SUCCEEDED = common_pb2.EXECUTION_SUCCEEDED


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ceil(ms: int, step: int) -> int:
    return -(-ms // step) * step


@dataclass(frozen=True)
class Case:
    """A task and what the documented rules say it does around the transition `t`.

    `fires(created, t, end)`: the (nominal, outcome) pairs due in [created, end]; `next_after`: its next
    fire once the window has passed (the first one due after `end`)."""

    name: str
    expression: str
    fires: Callable[[int, int, int], list[tuple[int, str]]]
    next_after: Callable[[int], int]
    dst_gap: str | None = None
    dst_fold: str | None = None

    def schedule(self) -> common_pb2.Schedule:
        extra = {k: v for k, v in (("dst_gap", self.dst_gap), ("dst_fold", self.dst_fold)) if v}
        return cron(self.expression, PARIS, seconds=True, **extra)  # type: ignore[arg-type]

    def flags(self) -> list[str]:
        out = ["--cron", self.expression, "--seconds", "--tz", PARIS]
        if self.dst_gap:
            out += ["--dst-gap", self.dst_gap]
        if self.dst_fold:
            out += ["--dst-fold", self.dst_fold]
        return out


def _every5(lo: int, hi: int, outcome: str = "FIRED") -> list[tuple[int, str]]:
    """Every whole 5 s in [lo, hi]."""
    return [(n, outcome) for n in range(_ceil(lo, 5000), hi + 1, 5000)]


def _none(_c: int, _t: int, _e: int) -> list[tuple[int, str]]:
    return []


SPRING_CASES = [
    # Elapsed-time (minute field `*`): follows the new clock, so 01:59:5x CET then 03:00:0x CEST, every 5 s
    # of real time, none in the gap (there is no instant in it), none twice.
    Case(
        "spring-elapsed-h1-h3", "*/5 * 1,3 * * *", lambda c, t, e: _every5(c, e), lambda e: _ceil(e + 1, 5000)
    ),
    # Elapsed-time, hour 2 only: its gap times do not fire (default skip); next: 02:00:00 CEST tomorrow.
    Case("spring-elapsed-h2", "*/5 * 2 * * *", _none, lambda e: SPRING_MS + DAY_MS - HOUR_MS),
    # The same with --dst-gap shift: the gap's 720 times fire once, at 03:00:00 CEST, dst_shifted.
    Case(
        "spring-elapsed-h2-shift",
        "*/5 * 2 * * *",
        lambda c, t, e: [(t, "DST_SHIFTED")],
        lambda e: SPRING_MS + DAY_MS - HOUR_MS,
        dst_gap="shift",
    ),
    # Fixed-time 02:30:00: fires once at the first instant after the gap, dst_shifted; next 02:30 CEST.
    Case(
        "spring-fixed-0230",
        "0 30 2 * * *",
        lambda c, t, e: [(t, "DST_SHIFTED")],
        lambda e: SPRING_MS + DAY_MS - HOUR_MS + 30 * 60_000,
    ),
    # Fixed-time 02:00, 02:30, 03:00, 03:30: the gap's two merge into 03:00, which matches by itself:
    # one ordinary fire there (not two, not dst_shifted); next 03:30 CEST today.
    Case(
        "spring-fixed-merge",
        "0 0,30 2,3 * * *",
        lambda c, t, e: [(t, "FIRED")],
        lambda e: SPRING_MS + 30 * 60_000,
    ),
    # Fixed-time with --dst-gap skip: nothing today; next 02:30 CEST tomorrow.
    Case(
        "spring-fixed-0230-skip",
        "0 30 2 * * *",
        _none,
        lambda e: SPRING_MS + DAY_MS - HOUR_MS + 30 * 60_000,
        dst_gap="skip",
    ),
]

FALL_CASES = [
    # Elapsed-time in hour 2: both passes (02:59:5x CEST, then 02:00:0x CET), every 5 s, none twice.
    Case("fall-elapsed-h2", "*/5 * 2 * * *", lambda c, t, e: _every5(c, e), lambda e: _ceil(e + 1, 5000)),
    # The same with --dst-fold first: the first pass only; next: 02:00:00 CET tomorrow (the repeat's
    # 02:00-02:59 never fires).
    Case(
        "fall-elapsed-h2-first",
        "*/5 * 2 * * *",
        lambda c, t, e: _every5(c, t - 1),
        lambda e: FALL_MS + DAY_MS,
        dst_fold="first",
    ),
    # Fixed-time (minutes 0 and 59 of hour 2): the first occurrence only (default): 02:59:5x CEST; the
    # repeated 02:00:0x CET does not fire (its first occurrence was an hour ago); next: tomorrow 02:00 CET.
    Case(
        "fall-fixed",
        "*/5 0,59 2 * * *",
        lambda c, t, e: _every5(c, t - 1),
        lambda e: FALL_MS + DAY_MS,
    ),
    # The same with --dst-fold both: the repeat fires too, every 5 s across the change.
    Case(
        "fall-fixed-both",
        "*/5 0,59 2 * * *",
        lambda c, t, e: _every5(c, e),
        lambda e: _ceil(e + 1, 5000),
        dst_fold="both",
    ),
    # --dst-fold second: nothing in the first pass, then the repeat from 02:00:00 CET.
    Case(
        "fall-fixed-second",
        "*/5 0,59 2 * * *",
        lambda c, t, e: _every5(t, e),
        lambda e: _ceil(e + 1, 5000),
        dst_fold="second",
    ),
]


@dataclass(frozen=True)
class Preview:
    """One previewed nominal time: whether it fires, when, and its notes ("dst_shifted (...)", ...)."""

    nominal_ms: int
    fires: bool
    actual_ms: int
    notes: tuple[str, ...]

    @property
    def shifted(self) -> bool:
        return any(n.startswith("dst_shifted") for n in self.notes)


@dataclass
class Run:
    """What one case's task did around its transition, read once the window had passed."""

    case: Case
    task: common_pb2.Task
    expected: list[tuple[int, str]]
    offline_preview: list[Preview]  # `schedctl schedule preview`, from the creation
    task_preview: list[Preview]  # `schedctl task preview`, from the creation
    next_fire_ms: int = 0  # after the window, before the cancel
    executions: list[common_pb2.Execution] = field(default_factory=list)
    ledger: dict[int, common_pb2.FireRecord] = field(default_factory=dict)
    ran: Counter[int] = field(default_factory=Counter)  # payload runs by nominal time


@dataclass
class Transition:
    at_ms: int
    end_ms: int
    runs: dict[str, Run]
    leader_share: float  # CPU share of the leader from 3 s before to WINDOW_AFTER_MS after
    leaders: set[str]  # leaders seen across the window


def _preview_rows(*argv: str) -> list[Preview]:
    """The rows of a `schedctl -o json ... preview` (`schedule preview`'s object or `task preview`'s
    list), run in this process: the same parser and code as the command."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = schedctl_main(["-o", "json", *argv])
    assert code == 0, (argv, err.getvalue())
    doc = json.loads(out.getvalue())
    rows = doc["fires"] if isinstance(doc, dict) else doc
    return [
        Preview(
            nominal_ms=row["nominal_time_ms"],
            fires=row.get("fires", row["actual_ms"] != 0),
            actual_ms=row["actual_ms"],
            notes=tuple(row["notes"]),
        )
        for row in rows
    ]


def _run_transition(root: Path, at_ms: int, cases: list[Case], clusters: list[Cluster]) -> Transition:
    """Start a cluster whose clocks read LEAD_S before `at_ms`, create the cases' tasks, watch the
    transition, and collect what happened."""
    offset_s = (at_ms / 1000 - LEAD_S) - time.time()
    env = faketime_env(f"{offset_s:+.3f}s")

    def fake_now() -> int:
        return int((time.time() + offset_s) * 1000)

    c = Cluster(root, n=3, node_env={f"node{i}": env for i in (1, 2, 3)})
    clusters.append(c)
    c.start()
    c.start_worker("w1", capacity=8, env=env)
    c.wait_workers(1)
    ahead = at_ms - fake_now()
    assert ahead >= MIN_AHEAD_MS, f"setup took too long: the tasks would be created {ahead} ms before it"
    end_ms = at_ms + WINDOW_AFTER_MS
    ledger_dir = root / "ran"
    ledger_dir.mkdir()
    runs: dict[str, Run] = {}
    with Client(c.servers, timeout_s=30) as client:
        for case in cases:
            task = client.create_task(
                case.name, case.schedule(), command(*ledger_command(ledger_dir / case.name))
            )
            created = task.created_at_ms
            assert created < at_ms - 5000, task
            frm = _iso(created)
            runs[case.name] = Run(
                case,
                task,
                case.fires(created, at_ms, end_ms),
                _preview_rows("schedule", "preview", *case.flags(), "--from", frm, "--limit", "6"),
                _preview_rows(
                    "--server", c.servers, "task", "preview", task.task_id, "--from", frm, "--limit", "6"
                ),
            )
        assert fake_now() < at_ms - 3000, "the previews took too long"
        leaders: set[str] = set()

        def seen_leader() -> None:
            lead = c.leader()
            if lead is not None:
                leaders.add(lead.node_id)

        wait_for(lambda: fake_now() >= at_ms - 3000, 20, "3 s before the transition")
        lead = c.wait_leader(10)
        assert lead.proc is not None
        leaders.add(lead.node_id)
        cpu0, mono0 = cpu_seconds(lead.proc.pid), time.monotonic()

        def past(ms: int) -> bool:
            seen_leader()
            return fake_now() >= ms

        wait_for(lambda: past(end_ms + 300), 20, "the window to pass")
        share = (cpu_seconds(lead.proc.pid) - cpu0) / (time.monotonic() - mono0)

        def settled() -> bool:  # every execution of the window has ended
            return all(
                e.state not in (common_pb2.EXECUTION_RUNNING, common_pb2.EXECUTION_PENDING)
                for r in runs.values()
                for e in client.list_executions(r.task.task_id)
                if e.nominal_time_ms <= end_ms
            )

        wait_for(settled, 20, "the window's executions to end")
        for r in runs.values():
            tid = r.task.task_id
            r.next_fire_ms = client.get_task(tid).next_fire_ms
            client.cancel_task(tid)
            r.executions = sorted(client.list_executions(tid), key=lambda e: e.nominal_time_ms)
            resp = client.explain_task(tid, from_=1, to=end_ms + DAY_MS * 2, limit=1000)
            r.ledger = {rec.nominal_time_ms: rec for rec in resp.records}
            r.ran = Counter(n for _, n, _ in read_ledger(ledger_dir / r.case.name))
    return Transition(at_ms, end_ms, runs, share, leaders)


@pytest.fixture(scope="module")
def spring(tmp_path_factory: pytest.TempPathFactory, module_clusters: list[Cluster]) -> Transition:
    return _watch(tmp_path_factory.mktemp("dst-spring"), SPRING_MS, SPRING_CASES, module_clusters)


@pytest.fixture(scope="module")
def fall(tmp_path_factory: pytest.TempPathFactory, module_clusters: list[Cluster]) -> Transition:
    return _watch(tmp_path_factory.mktemp("dst-fall"), FALL_MS, FALL_CASES, module_clusters)


def _watch(root: Path, at_ms: int, cases: list[Case], clusters: list[Cluster]) -> Transition:
    try:
        t = _run_transition(root, at_ms, cases, clusters)
    except BaseException:
        for c in clusters:
            print(c.logs())
        raise
    clusters[-1].stop()  # done with it: the next transition's cluster gets the machine
    return t


def _check(t: Transition, name: str) -> None:
    r = t.runs[name]
    created = r.task.created_at_ms
    in_window = [e for e in r.executions if created <= e.nominal_time_ms <= t.end_ms]
    got = [(e.nominal_time_ms, outcome_name(r.ledger[e.nominal_time_ms])) for e in in_window]
    assert got == r.expected, f"{name}: fired {[(_iso(n), o) for n, o in got]}"
    # Nothing else in the ledger over the window (a skipped gap or fold time is no record at all).
    recorded = sorted(n for n in r.ledger if created <= n <= t.end_ms)
    assert recorded == [n for n, _ in r.expected], f"{name}: ledger {[_iso(n) for n in recorded]}"
    for e in in_window:
        rec = r.ledger[e.nominal_time_ms]
        assert rec.execution_id == e.execution_id and e.state == SUCCEEDED, (name, e, rec)
        due = rec.actual_ms or e.nominal_time_ms
        assert due == e.nominal_time_ms, (name, rec)  # a shifted fire is due at its own (nominal) instant
        started = first_started_ms(e)
        assert due - START_SLACK_MS <= started <= due + ON_TIME_MS, (
            f"{name}: {_iso(due)} started {_iso(started)}"
        )
        assert r.ran[e.nominal_time_ms] == 1, f"{name}: the payload of {_iso(e.nominal_time_ms)} ran {r.ran}"
    assert sum(r.ran[n] for n in r.ran if created <= n <= t.end_ms) == len(r.expected), (name, r.ran)
    assert r.next_fire_ms == r.case.next_after(t.end_ms), f"{name}: next fire {_iso(r.next_fire_ms)}"
    # What the previews announced at creation: the same fires (nominal time, dst note) up to the end of
    # the window, then the next fire the task reported after it.
    for kind, rows in (("schedule preview", r.offline_preview), ("task preview", r.task_preview)):
        firing = [p for p in rows if p.fires]
        announced = [(p.nominal_ms, p.shifted) for p in firing if p.nominal_ms <= t.end_ms]
        assert announced == [(n, o == "DST_SHIFTED") for n, o in r.expected], f"{name}: {kind} {rows}"
        assert all(p.actual_ms == p.nominal_ms for p in firing), f"{name}: {kind} {rows}"
        later = [p.nominal_ms for p in firing if p.nominal_ms > t.end_ms]
        assert later and later[0] == r.next_fire_ms, f"{name}: {kind} announced next {later[:1]}"


def _check_leader(t: Transition) -> None:
    assert len(t.leaders) == 1, f"leadership changed across the transition: {t.leaders}"
    assert t.leader_share < MAX_LEADER_SHARE, f"the leader used {t.leader_share:.2f} of a core"


@pytest.mark.parametrize("name", [c.name for c in SPRING_CASES])
def test_spring_forward_fires_exactly_the_documented_times(spring: Transition, name: str) -> None:
    _check(spring, name)


def test_spring_forward_preview_says_an_elapsed_jobs_gap_times_are_skipped(spring: Transition) -> None:
    run = spring.runs["spring-elapsed-h2"]
    for rows in (run.offline_preview, run.task_preview):
        (gap_row,) = [p for p in rows if p.nominal_ms == SPRING_MS]
        assert not gap_row.fires and any(n.startswith("dst_skipped") for n in gap_row.notes), gap_row


def test_spring_forward_the_leader_neither_spins_nor_stalls(spring: Transition) -> None:
    _check_leader(spring)


@pytest.mark.parametrize("name", [c.name for c in FALL_CASES])
def test_fall_back_fires_exactly_the_documented_times(fall: Transition, name: str) -> None:
    _check(fall, name)


def test_fall_back_the_leader_neither_spins_nor_stalls(fall: Transition) -> None:
    _check_leader(fall)


SKEW_S = 3
EARLY_MS = 500  # fault-testing.md 2.3, R1: a start at most 0.5 s before its due time


def _true_time_command(path: Path) -> list[str]:
    """A payload that appends `execution_id nominal_ms attempt wall_ns` to `path` as its first act (the
    worker runs on the true clock, so wall_ns is the true start)."""
    code = (
        "import os, time; t = time.time_ns(); "
        f"f = open({str(path)!r}, 'a'); "
        "f.write(' '.join([os.environ['CRONRAFT_EXECUTION_ID'], os.environ['CRONRAFT_NOMINAL_TIME_MS'], "
        "os.environ['CRONRAFT_ATTEMPT'], str(t)]) + chr(10)); f.close()"
    )
    return [sys.executable, "-c", code]


def test_a_per_second_cron_fires_each_second_once_across_a_leader_kill_with_a_skewed_follower(
    tmp_path: Path, clusters: list[Cluster]
) -> None:
    """node2's wall clock is 3 s ahead (measured and corrected; healthy under a 10 s bound, so that it
    keeps the leadership it gets). node1 leads (shortest election timeout); it is killed while a
    per-second cron runs, and node2 is elected in most runs (it stands first: raft overrides below): it
    fires the rest by its corrected clock, the correction kept from three clocks once node1's readings expire
    (two clocks decide nothing), and every nominal second fires once, none of them early (by its raw
    clock: 3 s early)."""
    c = Cluster(
        tmp_path,
        n=3,
        node_env={"node2": faketime_env(f"+{SKEW_S}s")},
        # node1 wins the first election: its timeout is drawn in 1-2 s, the others' in 4-8 s. After its
        # kill, a follower whose connection to it closed stands after 3 x heartbeat_ms + up to a quarter
        # of its election timeout (daemon's fast failover): node2 in 0.15-1.15 s, node3 in 1.2-2.2 s.
        raft_overrides={
            "node2": {"election_timeout_ms": 4000},
            "node3": {"election_timeout_ms": 4000, "heartbeat_ms": 400},
        },
        extra_toml="[clock]\nmax_offset_ms = 10000\n",
    )
    clusters.append(c)
    c.start()
    c.start_worker("w1", capacity=8)
    c.wait_workers(1)
    node1, node2, _node3 = c.nodes
    assert c.wait_leader() is node1, "node1 was expected to win the first election"
    wait_for(
        lambda: abs(node2.status().clock_correction_ms - SKEW_S * 1000) <= 300,
        20,
        "node2 measured and corrected by about +3 s",
    )
    ran = tmp_path / "ran"
    with Client(c.servers, timeout_s=30) as client:
        task = client.create_task(
            "tick", cron("* * * * * *", seconds=True), command(*_true_time_command(ran))
        )
        wait_for(lambda: len(read_rows(ran)) >= 2, 20, "two runs before the kill")
        c.kill(node1)
        killed_ms = int(time.time() * 1000)
        successor = c.wait_leader()
        wait_for(
            lambda: max((n for _, n, _, _ in read_rows(ran)), default=0) > killed_ms + 6000,
            40,
            "runs 6 s past the kill",
        )
        led = c.leader()
        client.cancel_task(task.task_id)
        last = client.get_task(task.task_id).last_fired_nominal_ms
        wait_for(
            lambda: all(
                e.state not in (common_pb2.EXECUTION_RUNNING, common_pb2.EXECUTION_PENDING)
                for e in client.list_executions(task.task_id)
            ),
            30,
            "the last runs to end",
        )
        execs = list(client.list_executions(task.task_id, page_size=1000))
    nominals = sorted(e.nominal_time_ms for e in execs)
    assert nominals == list(range(nominals[0], last + 1, 1000)), "a nominal second lost or fired twice"
    assert nominals[0] == task.next_fire_ms and last > killed_ms + 6000
    assert all(e.state == SUCCEEDED for e in execs), [e for e in execs if e.state != SUCCEEDED]
    rows = read_rows(ran)
    runs = Counter(n for _, n, _, _ in rows)
    assert set(runs) == set(nominals) and max(runs.values()) == 1, f"ran twice: {runs.most_common(3)}"
    early = [(n, (wall // 1_000_000) - n) for _, n, _, wall in rows if wall // 1_000_000 < n - EARLY_MS]
    assert not early, f"started before their due time (nominal, ms): {early}"
    # No change after the failover; who won it is not asserted: node2 does in most runs (above), node3
    # in some (1 of the 8 runs seen), and then the skewed node is a follower
    # whose clock is one of the two the new leader's median is taken from.
    assert led is successor and successor is not node1, (successor, led)


def read_rows(path: Path) -> list[tuple[str, int, int, int]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        eid, nominal, attempt, wall = line.split()
        out.append((eid, int(nominal), int(attempt), int(wall)))
    return out
