"""Schedule answers: what apply asks of the schedule maths that depends on the versions a node runs (the
cron evaluator, tzdata, holidays, dateutil: raft.versions), behind one small interface. Pure.

- `Answers` computes (`LOCAL`): apply without a plan, the leader, previews.
- `Recorder` computes and writes each answer into a `TaskPlan` (the leader, raft/fireplan.py), which the
  command carries (Command.plan).
- `Carried` answers from a `TaskPlan`, and computes what is not in it (`misses`): every replica then
  uses the leader's instants, whatever tzdata it has, so replicas with other versions cannot diverge on
  what a plan holds (issue 18).

The questions, all about one task's schedule: the cron step (`schedule.cron_step`, before the window is
applied: the window is arithmetic on the command's own data), whether a fire was shifted out of a DST gap
(`schedule.dst_shifted`), what a calendar does at a nominal time (`calendar.resolve`), and the logical
date of a nominal time (`deps.day_bounds`). fixed_rate, at and fixed_delay steps are arithmetic and need
no answer; nor do jitter (a hash) and retry backoff.
"""

from __future__ import annotations

from datetime import tzinfo

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import calendar as cal
from cronraft.raft import deps, schedule

__all__ = ["LOCAL", "Answers", "Carried", "Recorder"]

Schedule = common_pb2.Schedule
Resolution = tuple[str, int, str]  # calendar.resolve: (outcome, instant_ms, reason)


class Answers:
    """Every answer computed here, with this node's versions."""

    def cron_step(self, sched: Schedule, after_ms: int) -> int | None:
        return schedule.cron_step(sched, after_ms)

    def next_fire(self, sched: Schedule, after_ms: int) -> int | None:
        return schedule.next_fire(sched, after_ms, step=self.cron_step)

    def first_fire(self, sched: Schedule, created_ms: int) -> int | None:
        return schedule.first_fire(sched, created_ms, step=self.cron_step)

    def dst_shifted(self, sched: Schedule, nominal_ms: int) -> bool:
        return schedule.dst_shifted(sched, nominal_ms)

    def resolve(
        self, cals: cal.CalendarSet, action: int, nominal_ms: int, zone: tzinfo, not_before_ms: int
    ) -> Resolution:
        return cal.resolve(cals, action, nominal_ms, zone, not_before_ms=not_before_ms)

    def day_bounds(self, sched: Schedule, nominal_ms: int) -> tuple[int, int]:
        return deps.day_bounds(sched, nominal_ms)


LOCAL = Answers()


class Recorder(Answers):
    """Computes like `Answers` and records every answer into `plan` (the leader's side)."""

    def __init__(self, plan: commands_pb2.TaskPlan) -> None:
        self.plan = plan

    def cron_step(self, sched: Schedule, after_ms: int) -> int | None:
        got = super().cron_step(sched, after_ms)
        self.plan.cron_next[after_ms] = -1 if got is None else got
        return got

    def dst_shifted(self, sched: Schedule, nominal_ms: int) -> bool:
        got = super().dst_shifted(sched, nominal_ms)
        self.plan.dst_shifted[nominal_ms] = got
        return got

    def resolve(
        self, cals: cal.CalendarSet, action: int, nominal_ms: int, zone: tzinfo, not_before_ms: int
    ) -> Resolution:
        got = super().resolve(cals, action, nominal_ms, zone, not_before_ms)
        self.plan.calendar.add(
            nominal_ms=nominal_ms,
            not_before_ms=not_before_ms,
            outcome=got[0],
            instant_ms=got[1],
            reason=got[2],
        )
        return got

    def day_bounds(self, sched: Schedule, nominal_ms: int) -> tuple[int, int]:
        got = super().day_bounds(sched, nominal_ms)
        day = self.plan.logical_day[nominal_ms]
        day.start_ms, day.end_ms = got
        return got


class Carried(Answers):
    """The answers of a `TaskPlan` (the leader's); a question it does not answer is computed here and
    counted in `misses` (the state changed between the leader's read and the apply, or a path the leader
    did not foresee: the result is then what this node computes, as without a plan)."""

    def __init__(self, plan: commands_pb2.TaskPlan) -> None:
        # The plan's maps are read in place (a fire asks one or two questions: copying them cost more).
        self._next = plan.cron_next
        self._dst = plan.dst_shifted
        self._days = plan.logical_day
        self._calendar = plan.calendar
        self._cal: dict[tuple[int, int], Resolution] | None = None
        self.misses = 0

    def _miss(self, question: str, key: int) -> None:
        self.misses += 1

    def cron_step(self, sched: Schedule, after_ms: int) -> int | None:
        got = self._next.get(after_ms)
        if got is None:
            self._miss("cron_step", after_ms)
            return super().cron_step(sched, after_ms)
        return None if got < 0 else got

    def dst_shifted(self, sched: Schedule, nominal_ms: int) -> bool:
        got = self._dst.get(nominal_ms)
        if got is None:
            self._miss("dst_shifted", nominal_ms)
            return super().dst_shifted(sched, nominal_ms)
        return got

    def resolve(
        self, cals: cal.CalendarSet, action: int, nominal_ms: int, zone: tzinfo, not_before_ms: int
    ) -> Resolution:
        if self._cal is None:
            self._cal = {
                (a.nominal_ms, a.not_before_ms): (a.outcome, a.instant_ms, a.reason) for a in self._calendar
            }
        got = self._cal.get((nominal_ms, not_before_ms))
        if got is None:
            self._miss("resolve", nominal_ms)
            return super().resolve(cals, action, nominal_ms, zone, not_before_ms)
        return got

    def day_bounds(self, sched: Schedule, nominal_ms: int) -> tuple[int, int]:
        day = self._days.get(nominal_ms)
        if day is None:
            self._miss("day_bounds", nominal_ms)
            return super().day_bounds(sched, nominal_ms)
        return day.start_ms, day.end_ms
