"""The clock-health estimator and policy (daemon.clockhealth), in virtual time.

A tiny simulated network: node i's wall clock reads `true + skew[i]`, its monotonic clock reads `true`
(any origin would do); a probe from A to B takes `d1` there and `d2` back, so its sample's error is
(d1 - d2) / 2. Everything is deterministic (seeded).
"""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest

from cronraft.daemon import clockhealth
from cronraft.daemon.clock import CorrectedClock
from cronraft.daemon.clockhealth import (
    DEADBAND_MS,
    ClockEstimator,
    ClockPolicy,
    cluster_median,
    make_sample,
)
from cronraft.daemon.clockprobe import ClockMonitor
from cronraft.raft.audit import AuditLog, read_audit

PROBE_MS = 1000.0
MAX_AGE_MS = 5 * PROBE_MS


class Net:
    def __init__(self, skews: dict[str, float], seed: int = 1) -> None:
        self.skews = skews
        self.rng = random.Random(seed)
        self.t = 1_700_000_000_000.0  # true time, ms
        self.silent: set[str] = set()
        self.est = {n: ClockEstimator([p for p in skews if p != n], max_age_ms=MAX_AGE_MS) for n in skews}

    def probe(self, src: str, dst: str, d1: float, d2: float) -> None:
        if dst in self.silent or src in self.silent:
            return
        sample = make_sample(
            sent_wall_ms=self.t + self.skews[src],
            sent_mono_ms=self.t,
            recv_mono_ms=self.t + d1 + d2,
            peer_wall_ms=self.t + d1 + self.skews[dst],
        )
        self.est[src].add(dst, sample)

    def round(self, delay: tuple[float, float] = (0.1, 2.0), spike: float = 0.0) -> None:
        """Everyone probes everyone once, then a probe interval passes."""
        for src in self.skews:
            for dst in self.skews:
                if src != dst:
                    d1, d2 = self.rng.uniform(*delay), self.rng.uniform(*delay)
                    if spike and self.rng.random() < spike:
                        # a congested, asymmetric round trip: up to 200 ms one way only
                        d1 += self.rng.uniform(0, 200)
                    self.probe(src, dst, d1, d2)
        self.t += PROBE_MS


def test_median_of_self_and_peers() -> None:
    assert cluster_median([-5000, -5000]) == -5000  # I am 5 s ahead of both peers
    assert cluster_median([5000, 0]) == 0
    assert cluster_median([]) == 0
    # even counts: the middle value closest to our own clock (module doc)
    assert cluster_median([-5000]) == 0
    assert cluster_median([-5000, -5000, -5000]) == -5000


@pytest.mark.parametrize("skew", [5000.0, -5000.0])
def test_three_nodes_one_skewed(skew: float) -> None:
    net = Net({"n1": skew, "n2": 0.0, "n3": 0.0})
    for _ in range(3):
        net.round()
    e1 = net.est["n1"].estimate(net.t)
    assert e1.decided and e1.offset_ms == pytest.approx(skew, abs=2)
    for n in ("n2", "n3"):
        e = net.est[n].estimate(net.t)
        assert e.decided and e.offset_ms == pytest.approx(0, abs=2)
        assert e.peer_offset("n1") == pytest.approx(skew, abs=2)
        other = "n3" if n == "n2" else "n2"
        assert e.peer_offset(other) == pytest.approx(0, abs=2)

    policy = ClockPolicy(max_offset_ms=1000)
    h = policy.update(e1)
    assert not h.healthy and h.measured and h.correction_ms == pytest.approx(skew, abs=2)
    h2 = ClockPolicy(max_offset_ms=1000).update(net.est["n2"].estimate(net.t))
    assert h2.healthy and h2.correction_ms == 0


def test_noisy_rtt_the_fastest_sample_wins() -> None:
    """Delays up to 20 ms each way and one-way spikes up to 200 ms on a third of the probes: the
    min-RTT filter keeps the error within tens of ms, and the correction (hysteresis) never moves."""
    net = Net({"n1": 1234.0, "n2": 0.0, "n3": -30.0}, seed=7)
    policy = ClockPolicy(max_offset_ms=1000)
    corrections = set()
    worst = 0.0
    for i in range(60):
        net.round(delay=(0.2, 20.0), spike=0.33)
        if i >= 2:
            est = net.est["n1"].estimate(net.t)
            # the median of {n1, n2, n3} is n2's clock (0): n1 is 1234 ms ahead of it
            worst = max(worst, abs(est.offset_ms - 1234.0))
            corrections.add(policy.update(est).correction_ms)
    assert worst < 30.0  # a sample's error is at most rtt / 2 of the fastest of ~5 fresh ones
    assert len(corrections) == 1  # noise below the deadband never jitters the scheduling clock
    # a single raw sample can be off by 100 ms: the filter is what makes the estimate good
    r = net.est["n1"].reading("n2", net.t)
    assert r is not None and r.rtt_ms < 40


def test_a_silent_peer_expires_and_the_correction_holds() -> None:
    net = Net({"n1": 5000.0, "n2": 0.0, "n3": 0.0})
    policy = ClockPolicy(max_offset_ms=1000)
    for _ in range(3):
        net.round()
    assert policy.update(net.est["n1"].estimate(net.t)).correction_ms == pytest.approx(5000, abs=2)

    net.silent.add("n3")
    for _ in range(int(MAX_AGE_MS / PROBE_MS) + 1):
        net.round()
    est = net.est["n1"].estimate(net.t)
    assert set(est.readings) == {"n2"}  # n3's samples expired
    assert not est.decided  # two clocks that disagree: nobody can tell which one is wrong
    h = policy.update(est)
    # ... so the last decided correction stays in force: n1 keeps firing on the cluster's time
    assert h.correction_ms == pytest.approx(5000, abs=2) and not h.healthy and not h.measured
    # and n2, which sees only n1, does not start believing it is the one that is off
    h2 = ClockPolicy(max_offset_ms=1000).update(net.est["n2"].estimate(net.t))
    assert h2.healthy and h2.correction_ms == 0

    net.silent.clear()
    net.round()
    assert policy.update(net.est["n1"].estimate(net.t)).measured


def test_the_correction_follows_a_clock_step_in_one_step() -> None:
    net = Net({"n1": 0.0, "n2": 0.0, "n3": 0.0})
    policy = ClockPolicy(max_offset_ms=1000)
    for _ in range(3):
        net.round()
    assert policy.update(net.est["n1"].estimate(net.t)).correction_ms == 0
    net.skews["n1"] = -5000.0  # n1's wall clock is stepped back 5 s
    # old samples (offset 0) have the same RTT class; within the window they are replaced as they age
    for _ in range(clockhealth.WINDOW + 1):
        net.round()
    h = policy.update(net.est["n1"].estimate(net.t))
    assert h.correction_ms == pytest.approx(-5000, abs=2) and not h.healthy


def test_transfer_target_is_the_follower_closest_to_the_median() -> None:
    net = Net({"n1": 5000.0, "n2": 0.0, "n3": 300.0, "n4": -2000.0, "n5": 10.0})
    for _ in range(3):
        net.round()
    est = net.est["n1"].estimate(net.t)
    policy = ClockPolicy(max_offset_ms=1000)
    policy.update(est)
    assert policy.transfer_target(est, ["n2", "n3", "n4", "n5"]) in {"n2", "n5"}
    assert policy.transfer_target(est, ["n3", "n4"]) == "n3"
    assert policy.transfer_target(est, ["n4"]) is None  # never hand over to another skewed clock
    assert policy.transfer_target(est, []) is None


def test_a_single_node_is_healthy_and_measures_nothing() -> None:
    est = ClockEstimator([], max_age_ms=MAX_AGE_MS).estimate(0)
    h = ClockPolicy(max_offset_ms=1000).update(est)
    assert h.healthy and h.correction_ms == 0 and h.offset_ms == 0


def test_corrected_clock_moves_wall_time_only() -> None:
    class Fixed:
        def now_ms(self) -> int:
            return 10_000

        def mono_ms(self) -> int:
            return 42

    clock = CorrectedClock(Fixed())
    clock.correction_ms = 5000
    assert clock.now_ms() == 5000 and clock.raw_now_ms() == 10_000
    assert clock.mono_ms() == 42


def test_bad_parameters_name_the_field() -> None:
    with pytest.raises(ValueError, match="max_age_ms"):
        ClockEstimator(["a"], max_age_ms=0)
    with pytest.raises(ValueError, match="max_offset_ms"):
        ClockPolicy(max_offset_ms=0)
    with pytest.raises(KeyError, match="zz"):
        ClockEstimator(["a"], max_age_ms=1).add(
            "zz", make_sample(sent_wall_ms=0, sent_mono_ms=0, recv_mono_ms=1, peer_wall_ms=0)
        )


def test_the_estimator_is_pure() -> None:
    """No I/O, no clock: the same rule as the pure core (pyproject's import contract)."""
    tree = ast.parse(Path(clockhealth.__file__).read_text())
    imported = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not imported & {"grpc", "lmdb", "pysyncobj", "asyncio", "time", "random", "uuid", "os"}


def test_deadband_is_documented_value() -> None:
    assert 20 <= DEADBAND_MS <= 100


@pytest.mark.asyncio
async def test_monitor_corrects_the_clock_and_an_unhealthy_leader_hands_over(tmp_path: Path) -> None:
    """The monitor's decisions without the network: samples go straight into its estimator."""

    class Fixed:
        def now_ms(self) -> int:
            return 0

        def mono_ms(self) -> int:
            return 0

    leading = [True]
    transfers: list[str | None] = []

    async def transfer(target: str | None) -> bool:
        transfers.append(target)
        return True

    clock = CorrectedClock(Fixed())
    monitor = ClockMonitor(
        node_id="n1",
        peers={"n2": "unused:1", "n3": "unused:2"},
        probe_interval_ms=1000,
        max_offset_ms=1000,
        clock=clock,
        is_leader=lambda: leading[0],
        connected_peers=lambda: ["n2", "n3"],
        transfer=transfer,
        audit=(audit := AuditLog(tmp_path / "n1.audit.jsonl", "n1")),
        mono_ns=lambda: 1_000_000_000_000,  # 1e6 ms: the samples below arrive "now"
    )
    assert not monitor.settled()
    for peer, skew in (("n2", -5000.0), ("n3", -4990.0)):  # n1 is 5 s ahead of n2, n3 is 10 ms ahead of n2
        monitor.estimator.add(
            peer,
            make_sample(sent_wall_ms=0, sent_mono_ms=1e6 - 1, recv_mono_ms=1e6, peer_wall_ms=skew + 0.5),
        )
    await monitor.evaluate()
    assert monitor.settled()
    assert clock.correction_ms == 4990 and clock.now_ms() == -4990  # median: n3's clock
    assert not monitor.health.healthy
    assert transfers == ["n3"]  # the follower closest to the median (n3 is the median)
    leading[0] = False
    await monitor.evaluate()
    assert transfers == ["n3"]  # a follower hands nothing over
    audit.close()
    (rec,) = read_audit(audit.path)
    assert (rec["ev"], rec["offset_ms"], rec["healthy"]) == ("clock", 4990.0, False)


def test_a_clock_step_replaces_the_older_samples_at_once() -> None:
    """A step (ours or the peer's) must show in the next reading, not after the old samples age out."""
    est = ClockEstimator(["n2", "n3"], max_age_ms=5_000)
    for i in range(6):  # steady: both peers agree with us, fast round trips
        for p in ("n2", "n3"):
            est.add(
                p,
                make_sample(
                    sent_wall_ms=i * 1000,
                    sent_mono_ms=i * 1000,
                    recv_mono_ms=i * 1000 + 1,
                    peer_wall_ms=i * 1000,
                ),
            )
    assert est.estimate(5_001).offset_ms == pytest.approx(0, abs=2)
    # Our wall clock steps +5 s; the next probe (slower round trip than the old best) sees both peers -5 s.
    for p in ("n2", "n3"):
        est.add(
            p, make_sample(sent_wall_ms=11_000, sent_mono_ms=6_000, recv_mono_ms=6_004, peer_wall_ms=6_002)
        )
    e = est.estimate(6_004)
    assert e.decided and e.offset_ms == pytest.approx(5_000, abs=5)


class _Steppable:
    def __init__(self) -> None:
        self.wall = 1_800_000_000_000
        self.mono = 1_000

    def now_ms(self) -> int:
        return self.wall

    def mono_ms(self) -> int:
        return self.mono

    def advance(self, ms: int) -> None:
        self.wall += ms
        self.mono += ms


def test_a_wall_clock_step_is_held_until_a_measurement_confirms_it() -> None:
    inner = _Steppable()
    clock = CorrectedClock(inner, hold_limit_ms=5_000)
    clock.hold_steps = True
    t0 = clock.now_ms()
    inner.advance(1_000)
    assert clock.now_ms() == t0 + 1_000
    inner.wall += 5_000  # the wall clock steps +5 s
    inner.advance(500)
    assert clock.now_ms() == t0 + 1_500  # held: monotonic from the last trusted reading
    assert clock.pending_step_since_ms is not None
    clock.confirm(5_000)  # the peers measured this node at +5 s after the step
    inner.advance(500)
    assert clock.now_ms() == t0 + 2_000 and clock.pending_step_since_ms is None


def test_an_unconfirmed_step_is_taken_after_the_hold_limit_and_small_drift_is_followed() -> None:
    inner = _Steppable()
    clock = CorrectedClock(inner, hold_limit_ms=2_000)
    clock.hold_steps = True
    t0 = clock.now_ms()
    inner.wall += 100  # below the step threshold: followed at once (drift, slew)
    assert clock.now_ms() == t0 + 100
    inner.wall -= 3_000  # a backward step nobody confirms (peers silent)
    assert clock.now_ms() == t0 + 100
    inner.advance(2_500)
    assert clock.now_ms() == t0 + 100 - 3_000 + 2_500  # taken after the limit
    solo = CorrectedClock(_Steppable())  # no peers to judge: steps are never held
    s0 = solo.now_ms()
    solo.inner.wall += 5_000  # type: ignore[attr-defined]
    assert solo.now_ms() == s0 + 5_000
