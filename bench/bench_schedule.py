"""Micro-benchmark of the schedule hot path: `next_fire` per call, cold (every call steps the evaluator) and
warm (many tasks sharing an expression hit the memoised step), per DST policy; and `jitter_offset_ms`.
Run: .venv/bin/python bench/bench_schedule.py"""

from __future__ import annotations

import timeit

from cronraft.proto.v1 import common_pb2 as pb
from cronraft.raft import schedule

BASE_MS = 1_780_000_000_000  # 2026-05-28
CASES = {
    "cron */15 9-17 * * mon-fri UTC": pb.Schedule(cron=pb.CronSchedule(expression="*/15 9-17 * * mon-fri")),
    "cron */15 9-17 * * mon-fri Europe/Paris": pb.Schedule(
        cron=pb.CronSchedule(expression="*/15 9-17 * * mon-fri", time_zone="Europe/Paris")
    ),
    "cron 0 30 2 * * * America/New_York": pb.Schedule(
        cron=pb.CronSchedule(expression="0 30 2 * * *", time_zone="America/New_York")
    ),
    "cron @hourly Australia/Lord_Howe": pb.Schedule(
        cron=pb.CronSchedule(expression="@hourly", time_zone="Australia/Lord_Howe")
    ),
    "cron * * * * * * Europe/Paris gap skip": pb.Schedule(
        cron=pb.CronSchedule(expression="* * * * * *", time_zone="Europe/Paris"), dst_gap=pb.DST_GAP_SKIP
    ),
    "cron 30 1 * * * America/New_York fold both": pb.Schedule(
        cron=pb.CronSchedule(expression="30 1 * * *", time_zone="America/New_York"), dst_fold=pb.DST_FOLD_BOTH
    ),
    "fixed_rate 60s": pb.Schedule(fixed_rate=pb.FixedRateSchedule(period_ms=60_000)),
}


def per_call_us(case: pb.Schedule, *, cold: bool, run: int, calls: int = 2_000) -> float:
    if cold:  # a new `after` (a different second, never seen by an earlier run): the memo never hits
        first = BASE_MS + run * 1_000
        afters = iter(range(first, first + calls * 7_001_000, 7_001_000))
        seconds = timeit.timeit(lambda: schedule.next_fire(case, next(afters)), number=calls)
    else:
        schedule.next_fire(case, BASE_MS)
        seconds = timeit.timeit(lambda: schedule.next_fire(case, BASE_MS), number=calls)
    return seconds / calls * 1e6


def main() -> None:
    print(f"{'case':45} {'cold us/call':>13} {'warm us/call':>13}")
    for name, case in CASES.items():
        cold = min(per_call_us(case, cold=True, run=run) for run in range(5))
        warm = min(per_call_us(case, cold=False, run=run) for run in range(5))
        print(f"{name:45} {cold:13.1f} {warm:13.1f}")
    calls = 20_000
    seconds = min(
        timeit.timeit(lambda: schedule.jitter_offset_ms("task-0123456789", BASE_MS, 60_000), number=calls)
        for _ in range(5)
    )
    print(f"{'jitter_offset_ms':45} {seconds / calls * 1e6:13.2f}")


if __name__ == "__main__":
    main()
