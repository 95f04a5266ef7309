"""A `missed` notification gives each missed time's reason, as the fire ledger records it.

A Fire's result lists the nominal times it recorded `missed_downtime` without their reason; the leader
built the notification from that list, so every `missed[].reason` was "" (seen on 3 real nodes:
tests/integration/test_operations_semantics.py, resume with replay of a paused `skip` task)."""

from __future__ import annotations

import asyncio

from test_state import Log, create, fire, spec, tid

from cronraft.daemon.leader import LeaderSettings
from cronraft.daemon.leader_runner import LeaderRunner
from cronraft.daemon.notify_body import Notification, notification_body
from cronraft.proto.v1 import common_pb2
from cronraft.raft import state as sm
from tests.support.clock import FakeClock

MIN = 60_000


class Notifier:
    """Takes what the leader submits."""

    has_global_targets = False

    def __init__(self) -> None:
        self.submitted: list[Notification] = []

    def submit(self, n: Notification) -> bool:
        self.submitted.append(n)
        return True


def _leader(log: Log, wall_ms: int, notifier: Notifier) -> LeaderRunner:
    """The leader core of term 1 over `log`'s store, its clock at `wall_ms`, notifying into `notifier`:
    only its notification path runs here, so it commits nothing (no committer). Called inside the test's
    event loop: the runner holds asyncio objects."""
    return LeaderRunner(
        kv=log.sm.kv,
        committer=None,  # type: ignore[arg-type]
        settings=LeaderSettings(),
        node_id="n1",
        term=1,
        clock=FakeClock(wall=wall_ms, mono=1_000),  # type: ignore[arg-type]
        still_leader=lambda: True,
        heartbeat_interval_ms=1_000,
        notifier=notifier,  # type: ignore[arg-type]
    )


def test_a_missed_notification_carries_the_ledgers_reasons() -> None:
    log = Log()
    s = spec(misfire=common_pb2.MISFIRE_SKIP)
    s.notify.add(webhook_url="https://hooks.example.com/x")
    (c,) = log.apply(create(tid(1), s))
    first = c.task.next_fire_ms
    cmd = fire(tid(1), first, tid(100), at=first + 3 * MIN + 30_000)  # four nominal times passed
    results = log.apply(cmd)
    assert len(results[0].missed) == 4
    with log.sm.kv.read() as txn:
        recorded = {r.nominal_time_ms: r.reason for r in sm.ledger(txn, tid(1), 0, first + 10 * MIN, 100)}
    assert all(recorded.values())

    notifier = Notifier()

    async def main() -> None:
        runner = _leader(log, first, notifier)
        runner._notify([cmd], results)

    asyncio.run(main())
    (n,) = notifier.submitted
    body = notification_body(n, now_ms=first)
    assert body["missed_count"] == 4
    assert [(m["nominal_time_ms"], m["reason"]) for m in body["missed"]] == sorted(recorded.items())
    assert body["missed"][0]["reason"] == "not fired in time; misfire_skip"


def test_a_leader_command_applied_after_its_proposal_timed_out_still_notifies() -> None:
    """`_late_results`: a Fire given up on (its proposal timed out) and applied after all in this term.
    Its redo finds it done (not applied again): the late result is the only one with its missed fires."""
    log = Log()
    s = spec(misfire=common_pb2.MISFIRE_SKIP)
    s.notify.add(webhook_url="https://hooks.example.com/x")
    (c,) = log.apply(create(tid(2), s))
    first = c.task.next_fire_ms
    cmd = fire(tid(2), first, tid(200), at=first + MIN + 30_000)  # two nominal times passed
    results = log.apply(cmd)
    notifier = Notifier()

    async def main() -> None:
        runner = _leader(log, first, notifier)
        runner._late_results([cmd], results)

    asyncio.run(main())
    (n,) = notifier.submitted
    assert n.event == common_pb2.NOTIFY_MISSED and len(n.records) == 2
