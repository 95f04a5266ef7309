"""Benchmark of `cronraft.timerwheel.TimingWheel`: add, advance, cancel rates.

Adds N entries (keys shaped like the daemon's `(task_id, nominal_ms)`) with deadlines spread uniformly
over a span (default 1 hour), then advances through the span the way the leader's loop does: one
`advance(now)` plus one `next_deadline()` per step (default 10 ms, one tick). Then the same entries
are expired by one single jump, and cancelled. Rates are from CPU time (`time.process_time`), so a
busy machine skews them less; the script asserts correctness (every entry expires exactly once), never
timings.

    .venv/bin/python bench/bench_timerwheel.py [--entries 1000000] [--span-ms 3600000] [--step-ms 10]
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import time

from cronraft.timerwheel import TimingWheel

START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--span-ms", type=int, default=3_600_000)
    parser.add_argument("--step-ms", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    n, span, step = args.entries, args.span_ms, args.step_ms

    rng = random.Random(args.seed)
    deadlines = [START_MS + rng.randrange(span) for _ in range(n)]
    keys = [(f"task-{i:07d}", d) for i, d in enumerate(deadlines)]
    gc.collect()
    # The wheel makes no reference cycles; the collector only adds noise to the timings.
    gc.disable()

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wheel: TimingWheel[tuple[str, int]] = TimingWheel(now_ms=START_MS)
    t0 = time.process_time()
    for key, deadline in zip(keys, deadlines, strict=True):
        wheel.add(key, deadline)
    t_add = time.process_time() - t0
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    expired = calls = 0
    now = START_MS
    t0 = time.process_time()
    while now < START_MS + span:
        now += step
        expired += len(wheel.advance(now))
        wheel.next_deadline()
        calls += 1
    t_loop = time.process_time() - t0
    assert expired == n and len(wheel) == 0, (expired, len(wheel))

    for key, deadline in zip(keys, deadlines, strict=True):
        wheel.add(key, deadline + span)
    t0 = time.process_time()
    jumped = wheel.advance(START_MS + 3 * span)
    t_jump = time.process_time() - t0
    assert len(jumped) == n

    for key, deadline in zip(keys, deadlines, strict=True):
        wheel.add(key, deadline + 3 * span + 1)
    t0 = time.process_time()
    for key in keys:
        wheel.cancel(key)
    t_cancel = time.process_time() - t0
    assert len(wheel) == 0
    gc.enable()

    print(f"entries {n:,} over {span:,} ms, step {step} ms, tick 10 ms, 4 levels x 256 slots")
    print(f"add:              {n / t_add:12,.0f} adds/s         ({t_add:.2f} s)")
    print(
        f"advance by step:  {expired / t_loop:12,.0f} expirations/s  "
        f"({t_loop:.2f} s, {calls:,} advance+next_deadline calls, {t_loop / calls * 1e6:.1f} us/call)"
    )
    print(f"advance one jump: {n / t_jump:12,.0f} expirations/s  ({t_jump:.2f} s)")
    print(f"cancel:           {n / t_cancel:12,.0f} cancels/s      ({t_cancel:.2f} s)")
    grown = (rss_after - rss_before) / 1024
    print(f"max RSS growth while adding: ~{grown:.0f} MiB ({rss_after / 1024:.0f} MiB max RSS)")


if __name__ == "__main__":
    main()
