"""The fire planner: which tasks are due to fire now, and how far ahead of their due time.

State: the timing wheel of tasks due within the loaded horizon (counted per second for burst staging,
daemon.leader.staging), the **on-time wheel** of tasks due within the lead that may not fire ahead
(firing.may_fire_ahead: they wait here for their due time), the horizon loaded so far, and the tasks
with a Fire in flight.

Inputs: the due-index entries the core reads for `horizon_to_load`, tasks as they change (`schedule`),
and the wall time. Outputs: `take_due(now)`, the tasks to plan now, and `plan(task, now)`, the lead of
the Fire to propose (or None: not now, the task is back in a wheel).

Pure: no store, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable

from cronraft.daemon.leader import staging
from cronraft.daemon.leader.settings import LeaderSettings
from cronraft.proto.v1 import common_pb2
from cronraft.raft import firing
from cronraft.timerwheel import TimingWheel

# Fires that may fire ahead and are due within a window after the lead are proposed in the same tick:
# with start instants spread over the second (10,000 tasks every second on 10,000 anchors), firing each
# exactly `fire_lead_ms` ahead made one Raft entry per fire, then one per grant, each paying the fixed
# cost of an entry on every node. Coalesced, a tick carries the fires of a whole window; the lead of a
# fire grows by at most the window (the worker still holds its start until the due time).
# The window is a fifth of the lead, at most 100 ms (100 at the default 500 ms lead), so the time before
# a fire in which a change to its task no longer reaches it grows in proportion to what the operator set.
# W5 at 1,000 fires/s (3 nodes, 2 workers, alternated runs): 20 ms -> 100 ms took the leader's CPU per
# fire 0.372 / 0.347 -> 0.334 / 0.299 ms, entries per fire 0.063 -> 0.043 (50 ms: 0.34-0.36, 0.052).
FIRE_COALESCE_MS = 100  # the window's upper bound
FIRE_COALESCE_SHARE = 5  # the window is at most fire_lead_ms / FIRE_COALESCE_SHARE


def coalesce_ms(fire_lead_ms: int) -> int:
    """The coalescing window for a lead of `fire_lead_ms` (0 without fire ahead)."""
    return min(FIRE_COALESCE_MS, fire_lead_ms // FIRE_COALESCE_SHARE)


class FirePlanner:
    def __init__(self, settings: LeaderSettings) -> None:
        self.settings = settings
        self.wheel: staging.CountedWheel[str] = staging.CountedWheel(now_ms=0)
        self.on_time: TimingWheel[str] = TimingWheel(now_ms=0)
        # The lead in force since the last tick: `fire_lead_ms`, or more while a burst is staged.
        self.lead_now = settings.fire_lead_ms
        self.loaded_until = -1  # due-index loaded into the wheel up to and including this time
        self.firing: set[str] = set()  # task ids with a Fire proposed, not yet answered
        self.due_planned = 0  # the due time of the task the last `plan` planned (read once, for its Fire)

    def reset_clock(self, now_ms: int) -> None:
        self.wheel = staging.CountedWheel(now_ms=now_ms)
        self.on_time = TimingWheel(now_ms=now_ms)

    # ------------------------------------------------------------------------------------ horizon

    def horizon_to_load(self, now_ms: int) -> tuple[int, int] | None:
        """The due times (from, until: inclusive) to read from the due-index now, if any: only what is
        due after the part already loaded (tasks due before it are in a wheel, firing, or overdue and
        waiting; re-reading them at every advance cost a burst of 20,000 overdue tasks a scan of the
        whole backlog every half horizon)."""
        horizon = self.settings.horizon_ms
        if self.loaded_until >= now_ms + horizon // 2:
            return None
        return self.loaded_until + 1, now_ms + horizon

    def load(self, entries: Iterable[tuple[int, str]]) -> None:
        """Due-index entries (due_ms, task_id) read for `horizon_to_load`."""
        for due_ms, task_id in entries:
            if due_ms > self.loaded_until and task_id not in self.firing:
                self.wheel.add(task_id, due_ms)

    def loaded(self, until_ms: int) -> None:
        self.loaded_until = until_ms

    def schedule(self, task: common_pb2.Task, task_id: str = "") -> None:
        """A task changed: in the wheel at its next due time if that is within the loaded horizon.
        `task_id`: the task's id if the caller has it (else read)."""
        # Each field read once (upb: a new object per read; this runs for every Fire committed).
        task_id = task_id or task.task_id
        # Its due time (firing.due_of), as the due index keys it, not its nominal time: jitter or a
        # calendar roll moves one from the other. At the nominal time, `plan` found it not due and put it
        # back at that past time, again at every tick: the leader spun until the due time (a roll to the
        # next day: a day), and a due time before the nominal one outside the horizon was never loaded.
        due = task.next_due_ms or task.next_fire_ms
        if due and due <= self.loaded_until and task.state == common_pb2.TASK_SCHEDULED:
            self.wheel.add(task_id, due)
        elif task_id in self.wheel:
            self.wheel.cancel(task_id)

    def imported(self, tasks: Iterable[common_pb2.Task], report_due_until_ms: int) -> None:
        """Imported tasks due within the loaded horizon go to the wheel. Apply reported those due before
        `report_due_until_ms`; if the horizon moved past that meanwhile, reload from there (the load adds
        every task due after `loaded_until`)."""
        for task in tasks:
            self.schedule(task)
        self.loaded_until = min(self.loaded_until, report_due_until_ms)

    # -------------------------------------------------------------------------------------- plan

    def take_due(self, now_ms: int) -> list[tuple[str, int]]:
        """(task id, due ms) of what is due to be planned now: the wheel up to the lead (burst staging's,
        or `fire_lead_ms` + its coalescing window), the on-time wheel up to now. Sets the lead in force
        (`lead_now`)."""
        staged = until = staging.stage_until(self.wheel.counts, now_ms, **self._staging_args())
        lead = self.settings.fire_lead_ms
        if lead > 0:
            until = max(until, now_ms + lead + coalesce_ms(lead))
        self.lead_now = until - now_ms
        on_time = self.on_time.advance(now_ms)
        nd = self.wheel.next_deadline()
        if nd is None or nd > staged:
            # Nothing due within the lead: the coalescing window alone starts no fires. A busy leader
            # ticks at every commit and results message, and each such tick took the few fires that had
            # come within the window since the last one (W5 at 1,000/s: ~250 ticks with fires a second, each
            # an offers message per worker and a share of an entry, instead of one tick per window).
            return on_time
        return self.wheel.advance(until) + on_time

    def start_firing(self, task_id: str) -> bool:
        """Mark a Fire of `task_id` in flight; False if one already is."""
        if task_id in self.firing:
            return False
        self.firing.add(task_id)
        return True

    def done_firing(self, task_id: str) -> None:
        self.firing.discard(task_id)

    def retry_later(self, task_id: str, at_ms: int) -> None:
        """Its last Fire failed inside apply: not planned again before `at_ms`, whatever adds it."""
        self.firing.discard(task_id)
        self.wheel.add(task_id, at_ms)

    def plan(self, task: common_pb2.Task | None, task_id: str, now_ms: int) -> int | None:
        """The lead of the Fire of `task` to propose now (0: at its due time), or None: nothing to fire
        (gone, paused, done) or not yet (back in the wheel, or in the on-time wheel if it is due within
        the lead but may not fire ahead). Call after `start_firing`; on None the Fire is not in flight."""
        if not self.scheduled(task):
            self.firing.discard(task_id)
            return None
        assert task is not None
        due = firing.due_of(task)
        lead = self.lead_for(task, self.lead_now)
        self.due_planned = due
        if due > now_ms + lead:
            self.firing.discard(task_id)
            if due > now_ms + self.lead_now:  # the wheel had an older plan; the store decides
                self.schedule(task)
            else:  # due within the lead, but it may not fire ahead: it waits for its due time
                self.on_time.add(task_id, due)
            return None
        return lead

    @staticmethod
    def scheduled(task: common_pb2.Task | None) -> bool:
        """Whether `task` has a next fire (it exists, is scheduled, and its schedule goes on)."""
        return task is not None and task.state == common_pb2.TASK_SCHEDULED and bool(task.next_fire_ms)

    def refire(self, task: common_pb2.Task | None, nominal_time_ms: int) -> None:
        """A Fire's outcome is unknown: fire again if the store still has it due (I3 drops a copy)."""
        if task is not None and task.next_fire_ms == nominal_time_ms:
            self.wheel.add(task.task_id, firing.due_of(task))
        elif task is not None:
            self.schedule(task)

    def lead_for(self, task: common_pb2.Task | None, requested_ms: int | None = None) -> int:
        """How far ahead of its due time a Fire or Grant of `task` is proposed (the state machine checks
        the same rule, firing.fire_lead): `fire_lead_ms`, or the staging lead of a burst."""
        lead = self.settings.fire_lead_ms if requested_ms is None else requested_ms
        if task is None or not lead:
            return 0
        return firing.fire_lead(task, lead)

    # ------------------------------------------------------------------------------------- timing

    def wait_ms(self, now_ms: int, wait: int) -> int:
        """`wait`, shortened to the next fire, staging step or on-time fire."""
        nd = self.wheel.next_deadline()
        if nd is not None:
            wait = min(wait, nd - self.settings.fire_lead_ms - now_ms)
            st = staging.next_stage_ms(self.wheel.counts, now_ms, **self._staging_args())
            if st is not None:
                wait = min(wait, st - now_ms)
        hd = self.on_time.next_deadline()
        if hd is not None:
            wait = min(wait, hd - now_ms)
        return wait

    def _staging_args(self) -> dict[str, int]:
        s = self.settings
        return {"fire_lead_ms": s.fire_lead_ms, "stage_lead_ms": s.stage_lead_ms, "rate_per_s": s.stage_rate}


__all__ = ["FIRE_COALESCE_MS", "FIRE_COALESCE_SHARE", "FirePlanner", "coalesce_ms"]
