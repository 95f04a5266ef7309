"""Determinism across nodes (issue 12): the versions that change schedule results (raft.versions), their
comparison between members (daemon.versioncheck), and the leader's hold (LeaderCore.hold): while a
member disagrees, a tick fires nothing and grants nothing; leases already out are still expired; once
the hold lifts, what was due fires and is granted."""

from __future__ import annotations

import importlib

import pytest
from leader_rig import LeaderRig

from cronraft import __version__
from cronraft.daemon.versioncheck import VersionWatch
from cronraft.proto.v1 import cluster_pb2, commands_pb2, common_pb2
from cronraft.raft import cron
from cronraft.raft import state as sm
from cronraft.raft import versions as rv

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
Command = commands_pb2.Command

# --- the versions and their comparison ---------------------------------------------------------------


def test_schedule_versions_are_those_of_the_modules_in_use() -> None:
    v = rv.schedule_versions()
    assert v == {
        "evaluator": cron.EVALUATOR_VERSION,
        # The IANA release of the package the zones are read from, e.g. 2026f.
        "tzdata": importlib.import_module("tzdata").IANA_VERSION,
        "holidays": importlib.import_module("holidays").__version__,
        "python-dateutil": importlib.import_module("dateutil").__version__,
        "cronraft": __version__,
    }
    assert list(v)[: len(rv.COMPARED)] == list(rv.COMPARED)


def test_the_test_only_override_replaces_named_versions_and_refuses_others() -> None:
    v = rv.schedule_versions("tzdata=2099z, holidays=0.1")
    assert v["tzdata"] == "2099z" and v["holidays"] == "0.1" and v["evaluator"] == cron.EVALUATOR_VERSION
    for bad in ("tzdata", "cronraft=9", "glibc=2.39", "tzdata="):
        with pytest.raises(ValueError, match=rv.OVERRIDE_ENV):
            rv.schedule_versions(bad)


def test_differences_name_the_member_and_the_package() -> None:
    own = rv.schedule_versions()
    other = {**own, "tzdata": "2099z", "cronraft": "9.9"}  # cronraft is shown, not compared
    older = {"tzdata": own["tzdata"]}  # a node that reports only some: the rest are "unknown"
    diffs = rv.differences(own, {"n2": dict(own), "n3": other, "n4": None, "n5": older})
    assert ("n3", "tzdata", "2099z", own["tzdata"]) in diffs
    assert not [d for d in diffs if d[0] in ("n2", "n4")]  # agrees; not measured: does not block
    assert ("n5", "holidays", "unknown", own["holidays"]) in diffs
    assert rv.differences(own, {"n2": {**own, "cronraft": "9.9"}}) == []
    assert rv.describe(diffs[:1], self_id="n1") == f"n3 runs tzdata 2099z, n1 {own['tzdata']}"


def test_the_watch_forgets_a_silent_member_and_blocks_again_when_it_answers() -> None:
    now = [0.0]
    own = rv.schedule_versions()
    watch = VersionWatch(node_id="n1", own=own, peers=["n2", "n3"], max_age_s=5.0, mono=lambda: now[0])
    assert watch.mismatch() == ""  # nobody measured yet: nothing blocks
    assert not watch.peer_message("n2").measured
    other = VersionWatch(node_id="n3", own=rv.schedule_versions("tzdata=2099z"), peers=[], max_age_s=5.0)
    watch.note_peer("n2", watch.message())
    watch.note_peer("n3", other.message())
    assert watch.check() == f"n3 runs tzdata 2099z, n1 {own['tzdata']}"
    assert watch.peer_message("n3").versions["tzdata"] == "2099z"
    assert watch.peer_message("n3").cronraft == __version__
    now[0] = 6.0  # n3 silent for longer than max_age_s (down): it does not block
    watch.note_peer("n2", watch.message())
    assert watch.check() == "" and not watch.peer_message("n3").measured
    watch.note_peer("n3", other.message())  # back, still different
    assert watch.check().startswith("n3 runs tzdata 2099z")
    watch.note_peer("n3", cluster_pb2.ScheduleVersions())  # an answer without versions (an older node)
    assert "n3 runs evaluator unknown" in watch.check()
    watch.note_peer("n3", watch.message())  # restarted with the same versions
    assert watch.check() == ""


# --- the hold ---------------------------------------------------------------------------------------


class Rig(LeaderRig):
    """A leader core over one in-memory state machine, ticked every 10 ms of virtual time; the wait it
    asks for is checked at every step (never past a lease deadline, never a spin)."""

    def __init__(self) -> None:
        super().__init__(bounded_wakeup=True)


def test_a_held_leader_fires_and_grants_nothing_and_resumes_when_lifted() -> None:
    rig = Rig()
    rig.core.worker_connected("w1", 4, ["default"], {}, rig.mono)
    every = rig.create(common_pb2.Schedule(fixed_rate=common_pb2.FixedRateSchedule(period_ms=1_000)))
    rig.run(3.5)
    fired, granted = rig.count("fire"), rig.count("grant")
    assert fired >= 3 and granted >= 3
    rig.proposed.clear()

    rig.core.hold = "n3 runs tzdata 2099z, n1 2026f"
    # A trigger committed meanwhile (a client write) creates a pending execution: it is not granted.
    trigger = Command(stamped_at_ms=rig.now, trigger_task=commands_pb2.TriggerTask(task_id=every))
    rig.core.on_committed([trigger], rig.apply([trigger]), rig.now, rig.mono)
    rig.run(10)
    assert rig.count("fire") == 0 and rig.count("grant") == 0
    # The leases handed out before the hold were never renewed (no heartbeats here): they still expire.
    assert rig.count("expire_lease") >= 1
    assert not rig.core.leases

    rig.core.hold = ""
    rig.run(2)
    assert rig.count("fire") >= 1 and rig.count("grant") >= 1
    with rig.kv.read() as txn:
        task = sm.read_task(txn, every)
    assert task is not None and task.fire_count > fired
