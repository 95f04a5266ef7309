"""Task dependencies (pure): cycle checks at create/update time and "are the upstream runs done?".

A run of task B that depends on A starts only once A succeeded for the same *logical date*: an
execution of A whose nominal time falls on the same local date as B's run (in B's zone), or, with a
window, whose nominal time is within `window_ms` before B's. The leader asks `unmet()` before granting;
the answer depends only on the replicated state, so every leader gives the same one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2
from cronraft.raft import features, schedule
from cronraft.raft.codec import id_bytes, u64
from cronraft.raft.kv import Txn

MAX_DEPENDENCIES = 32
MAX_GRAPH = 10_000


def _task(txn: Txn, task_id: str) -> common_pb2.Task | None:
    raw = txn.get("tasks", id_bytes(task_id, field="spec.depends_on"))
    if raw is None:
        return None
    t = common_pb2.Task()
    t.ParseFromString(raw)
    return t


def check(txn: Txn, task_id: str, spec: common_pb2.TaskSpec) -> None:
    """Upstream tasks exist, and depending on them closes no cycle (the cycle is named)."""
    if len(spec.depends_on) > MAX_DEPENDENCIES:
        raise InvalidArgument("spec.depends_on", f"more than {MAX_DEPENDENCIES} dependencies")
    names = {task_id: spec.name}
    for i, dep in enumerate(spec.depends_on):
        field = f"spec.depends_on[{i}].task_id"
        if dep.window_ms < 0:
            raise InvalidArgument(f"spec.depends_on[{i}].window_ms", "must not be negative")
        if dep.task_id == task_id:
            raise InvalidArgument(field, f"a task cannot depend on itself ({spec.name})")
        upstream = _task(txn, dep.task_id)
        if upstream is None:
            raise InvalidArgument(field, f"no task {dep.task_id}")
        names[dep.task_id] = upstream.spec.name
        path = _path_to(txn, dep.task_id, task_id, names)
        if path is not None:
            chain = " -> ".join(f"{names.get(t, t)} ({t})" for t in [task_id, *path])
            raise InvalidArgument("spec.depends_on", f"cycle: {chain}")


def _path_to(txn: Txn, start: str, target: str, names: dict[str, str]) -> list[str] | None:
    """A chain of dependencies from `start` to `target`, following depends_on (depth first, iterative,
    each task once). The chain is rebuilt from each task's predecessor on the walk: carrying a copy of
    the path with each stacked task cost O(depth^2) on a long chain."""
    stack = [start]
    came_from: dict[str, str | None] = {start: None}
    seen: set[str] = set()
    while stack and len(seen) < MAX_GRAPH:
        node = stack.pop()
        if node == target:
            path = [node]
            while (prev := came_from[path[-1]]) is not None:
                path.append(prev)
            return path[::-1]
        if node in seen:
            continue
        seen.add(node)
        t = _task(txn, node)
        if t is None:
            continue
        names[node] = t.spec.name
        for dep in t.spec.depends_on:
            if dep.task_id not in seen:
                came_from[dep.task_id] = node
                stack.append(dep.task_id)
    return None


def day_bounds(sched: common_pb2.Schedule, nominal_ms: int) -> tuple[int, int]:
    """The logical date of a run at `nominal_ms`: its local day in the schedule's zone (UTC but for cron),
    as [start, end) instants. Depends on tzdata: a leader's plan answers it for replicas (raft.answers)."""
    zone = schedule.load_zone(sched.cron.time_zone if sched.WhichOneof("kind") == "cron" else "UTC")
    local = datetime.fromtimestamp(nominal_ms / 1000, zone)
    start = datetime(local.year, local.month, local.day, tzinfo=zone)
    end = start + timedelta(days=1)
    # Wall-clock midnights; in a zone whose midnight is skipped by DST this is still the right day.
    return int(start.timestamp() * 1000), int(
        datetime(end.year, end.month, end.day, tzinfo=zone).timestamp() * 1000
    )


def unmet(
    txn: Txn,
    task: common_pb2.Task,
    nominal_ms: int,
    *,
    days: Callable[[common_pb2.Schedule, int], tuple[int, int]] = day_bounds,
) -> str:
    """'' when every dependency of this run succeeded; else what it waits for. `days` gives the logical
    date's bounds (apply passes its plan's answers: raft.answers)."""
    for dep in task.spec.depends_on:
        if dep.window_ms:
            lo, hi = nominal_ms - dep.window_ms, nominal_ms + 1
            when = f"within {dep.window_ms} ms before"
        else:
            lo, hi = days(task.spec.schedule, nominal_ms)
            when = "for the same logical date"
        up16 = id_bytes(dep.task_id)
        ok = False
        for _, exec16 in txn.scan("fires", up16 + u64(max(0, lo)), up16 + u64(max(0, hi))):
            raw = txn.get("execs", exec16)
            if raw is None:
                continue
            e = common_pb2.Execution()
            e.ParseFromString(raw)
            if e.state == common_pb2.EXECUTION_SUCCEEDED:
                ok = True
                break
        if not ok:
            upstream = _task(txn, dep.task_id)
            if upstream is not None:
                return f"waiting for {upstream.spec.name} ({dep.task_id}) to succeed {when}"
            if features.is_active(txn, features.SCHEDULE_FIXES):  # before it: "waiting for ? (ID) ..."
                return f"waiting for task {dep.task_id} to succeed {when}, but it was deleted"
            return f"waiting for ? ({dep.task_id}) to succeed {when}"
    return ""


__all__ = ["MAX_DEPENDENCIES", "check", "day_bounds", "unmet"]
