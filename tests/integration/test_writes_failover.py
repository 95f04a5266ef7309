"""Every write of the SDK across a leader killed with the write applied and its answer not sent.

The SDK gives each write a request id reused on every retry (docs/cli.md, "Retries"), and the cluster
answers a request id it applied before from its dedup table (raft/result_bytes.remember): a write whose
outcome is unknown to the client is retried without doing it twice. The bug class hunted here: a write
acknowledged and lost, done twice, or refused on its retry although it was done.

How: every node runs with the failpoint `raft.after_apply_before_reply=once-crash` (docs/guarantees.md,
"Failpoints"), disarmed by its marker file. A test deletes the marker (armed) and makes one write: the
leader applies its entry (committed on a majority, stored in its LMDB) and exits at once, before the
write's caller is answered. The SDK's attempt fails UNAVAILABLE and is sent again, with the same request
id, to the next leader. The test then checks, on the killed node's store (read offline), that the entry
the crash followed is this write's (its request id is in that node's dedup table: the crash came right
after it, not after another entry), restarts the node, and asserts that the call succeeded with the
write's answer, that what it did happened once (one task, one run, one backfill set, one redrive...), and
that a second call with the same request id is answered the same without a second effect. The audit trail
(one record per applied client command, docs/security.md) counts the writes that took effect.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import lmdb
import pytest

from cronraft.client import AsyncClient, Client, build_spec, command, every, retry
from cronraft.client._calendars import date_range_rule
from cronraft.proto.v1 import common_pb2
from cronraft.raft.digest import store_path
from cronraft.raft.kv import DATABASES

from .harness import Cluster, NodeProc, wait_for

pytestmark = pytest.mark.integration

T = TypeVar("T")
FAILPOINT = "raft.after_apply_before_reply"
HOUR_MS = 3_600_000
SUCCEEDED = common_pb2.EXECUTION_SUCCEEDED
ENDED = frozenset(
    {
        SUCCEEDED,
        common_pb2.EXECUTION_FAILED,
        common_pb2.EXECUTION_TIMED_OUT,
        common_pb2.EXECUTION_CANCELLED,
        common_pb2.EXECUTION_LOST,
        common_pb2.EXECUTION_EXPIRED,
    }
)

# The payload: stamp "execution attempt" as its first act, wait for the gate if one is given (at most
# 60 s), then exit 0 if the flag file exists (or none is given), else 4.
_PAYLOAD = (
    "import os, sys, time\n"
    "stamps, gate, flag = sys.argv[1], sys.argv[2], sys.argv[3]\n"
    "with open(stamps, 'a') as f:\n"
    "    f.write(os.environ['CRONRAFT_EXECUTION_ID'] + ' ' + os.environ['CRONRAFT_ATTEMPT'] + chr(10))\n"
    "deadline = time.monotonic() + 60\n"
    "while gate and not os.path.exists(gate) and time.monotonic() < deadline:\n"
    "    time.sleep(0.02)\n"
    "sys.exit(0 if not flag or os.path.exists(flag) else 4)\n"
)


@dataclass
class Env:
    cluster: Cluster
    marker: Path  # the failpoint's: present = disarmed
    root: Path


@dataclass
class Stamps:
    """The start stamps of one test's payloads, its gate and its success flag."""

    path: Path
    gate: Path
    flag: Path

    def payload(self, *, gated: bool = False, fails: bool = False) -> common_pb2.Payload:
        gate = str(self.gate) if gated else ""
        flag = str(self.flag) if fails else ""
        return command(sys.executable, "-c", _PAYLOAD, str(self.path), gate, flag)

    def starts(self) -> list[tuple[str, int]]:
        if not self.path.exists():
            return []
        rows = (line.split() for line in self.path.read_text().splitlines())
        return [(p[0], int(p[1])) for p in rows if len(p) == 2]  # else a line being written


@pytest.fixture(scope="module")
def module_env(tmp_path_factory: pytest.TempPathFactory, module_clusters: list[Cluster]) -> Env:
    root = tmp_path_factory.mktemp("writes-failover")
    marker = root / "failpoint.marker"
    marker.write_text("disarmed")
    (root / "cluster").mkdir()
    c = Cluster(root / "cluster", n=3, lease_ttl_ms=15_000)
    c.env["CRONRAFT_FAILPOINTS"] = f"{FAILPOINT}=once-crash"
    c.env["CRONRAFT_FAILPOINT_MARKER"] = str(marker)
    module_clusters.append(c)
    try:
        c.start()
        c.start_worker("w1", capacity=8, env={"CRONRAFT_FAILPOINTS": ""})
        c.wait_workers(1)
    except BaseException:
        print(c.logs())
        raise
    return Env(c, marker, root)


@pytest.fixture
def env(module_env: Env) -> Env:
    """The module's cluster with its 3 nodes up and caught up, the failpoint disarmed."""
    assert module_env.marker.exists(), "the failpoint was left armed"
    wait_for(lambda: all(n.alive for n in module_env.cluster.nodes), 10, "every node running")
    module_env.cluster.wait_converged(timeout_s=30)
    return module_env


@pytest.fixture
def client(env: Env) -> Iterator[Client]:
    with Client(env.cluster.servers, timeout_s=30) as c:
        yield c


@pytest.fixture
def stamps(tmp_path: Path) -> Iterator[Stamps]:
    s = Stamps(tmp_path / "stamps", tmp_path / "gate", tmp_path / "flag")
    yield s
    s.gate.touch()  # no payload outlives its test by its wait


# -- the crash ----------------------------------------------------------------------------------------


def _dedup_keys(node: NodeProc, root: Path) -> set[str]:
    """The request ids in a stopped node's dedup table (its store read offline, as raft.digest does)."""
    path = store_path(root / node.node_id)
    db_env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=len(DATABASES), readahead=False)
    try:
        with db_env.begin() as txn:
            db = db_env.open_db(b"requests", txn=txn, create=False)
            return {bytes(k).decode() for k, _ in txn.cursor(db)}
    finally:
        db_env.close()


_HITS: list[bool] = []  # per crash: the entry it followed was the armed write's


@contextmanager
def _leader_dies_after_applying(env: Env, *request_ids: str) -> Iterator[None]:
    """Arm the failpoint for the block's write: the leader applies the next entry, then exits before
    answering. After the block: the leader crashed (exit 137), whether the entry it applied last holds
    `request_ids` (the crash followed this write, not another entry) is counted, and the node is started
    again."""
    c = env.cluster
    leader = c.wait_leader()
    env.marker.unlink()
    try:
        yield
        dead = wait_for(lambda: [n for n in c.nodes if not n.alive], 30, "the leader to crash")
        assert dead == [leader], f"{[n.node_id for n in dead]} crashed, the leader was {leader.node_id}"
        assert leader.proc is not None and leader.proc.returncode == 137, leader.proc.returncode
        assert env.marker.read_text() == FAILPOINT
        applied = _dedup_keys(leader, c.root)
        # Rarely an entry of the leader's own (a Prune, a worker's report) comes first and the crash
        # follows it: the write then went to the next leader only. Counted, and checked at the end.
        _HITS.append(all(r in applied for r in request_ids))
    finally:
        if not env.marker.exists():
            env.marker.write_text("disarmed")
        if not leader.alive:
            c.start_node(leader)


def _audit(client: Client, method: str, target: str) -> int:
    """How many requests did `method` on `target`: the audit trail's records of it all succeeded, and
    carry as many distinct request ids (a retry with the same request id is recorded again with the answer
    it got from the dedup table, docs/security.md: one request id, however many records)."""
    records = client.list_audit(method=method, target_id=target, limit=None)
    assert all(r.outcome == "ok" for r in records), records
    return len({r.request_id for r in records})


def _rid() -> str:
    return uuid.uuid4().hex


def _names() -> Iterator[str]:
    return (f"wf-{i}" for i in itertools.count())


_NAME = _names()


def _task(client: Client, payload: common_pb2.Payload, schedule: common_pb2.Schedule | None = None) -> Any:
    """A task that fires nothing by itself for an hour unless told otherwise."""
    return client.create_task(next(_NAME), schedule or every("1h"), payload)


def _final(client: Client, execution_id: str, timeout_s: float = 30) -> common_pb2.Execution:
    return wait_for(
        lambda: (e := client.get_execution(execution_id)).state in ENDED and e,
        timeout_s,
        f"execution {execution_id} to end",
    )


def _twice(call: Callable[[str], T], env: Env, kind: str) -> tuple[T, T]:
    """`call(request_id)` with the leader killed after applying it, then again with the same request id
    (answered from the dedup table)."""
    rid = _rid()
    with _leader_dies_after_applying(env, f"{kind}:{rid}"):
        first = call(rid)
    return first, call(rid)


# -- the cases ------------------------------------------------------------------------------------------


def test_create_task(env: Env, client: Client) -> None:
    name = next(_NAME)
    first, again = _twice(
        lambda rid: client.create_task(name, every("1h"), command("true"), request_id=rid), env, "create"
    )
    assert again.task_id == first.task_id
    assert [t.task_id for t in client.list_tasks(name_prefix=name)] == [first.task_id]
    assert _audit(client, "CreateTask", first.task_id) == 1


def test_update_and_edit_task(env: Env, client: Client) -> None:
    task = _task(client, command("true"))
    spec = build_spec(task.spec.name, every("2h"), command("true"), tags={"v": "2"})
    first, again = _twice(
        lambda rid: client.update_task(task.task_id, spec, expected_version=task.version, request_id=rid),
        env,
        "update",
    )
    assert first.version == again.version > task.version and dict(first.spec.tags) == {"v": "2"}
    # edit_task reads the task again on its second call: the dedup answer comes before the version check.
    edited, edited_again = _twice(
        lambda rid: client.edit_task(task.task_id, tags={"v": "3"}, request_id=rid), env, "update"
    )
    assert edited.version == edited_again.version > first.version
    stored = client.get_task(task.task_id)
    assert stored.version == edited.version and dict(stored.spec.tags) == {"v": "3"}
    assert _audit(client, "UpdateTask", task.task_id) == 2


def test_pause_and_resume_task(env: Env, client: Client) -> None:
    task = _task(client, command("true"))
    paused, paused_again = _twice(
        lambda rid: client.pause_task(task.task_id, "fo", request_id=rid), env, "pause"
    )
    assert paused.state == paused_again.state == common_pb2.TASK_PAUSED
    resumed, resumed_again = _twice(
        lambda rid: client.resume_task(task.task_id, request_id=rid), env, "resume"
    )
    assert resumed.state == resumed_again.state == common_pb2.TASK_SCHEDULED
    assert client.get_task(task.task_id).state == common_pb2.TASK_SCHEDULED
    assert _audit(client, "PauseTask", task.task_id) == 1
    assert _audit(client, "ResumeTask", task.task_id) == 1


def test_trigger_task_runs_once(env: Env, client: Client, stamps: Stamps) -> None:
    task = _task(client, stamps.payload())
    first, again = _twice(lambda rid: client.trigger_task(task.task_id, request_id=rid), env, "trigger")
    assert again.execution_id == first.execution_id and first.manual
    assert _final(client, first.execution_id).state == SUCCEEDED
    assert [e.execution_id for e in client.list_executions(task.task_id)] == [first.execution_id]
    assert stamps.starts() == [(first.execution_id, 1)]


def test_backfill_makes_one_set(env: Env, client: Client, stamps: Stamps) -> None:
    task = _task(client, stamps.payload())
    lo = (task.next_fire_ms // HOUR_MS - 3) * HOUR_MS
    first, again = _twice(
        lambda rid: client.backfill_task(task.task_id, lo, lo + 2 * HOUR_MS, request_id=rid), env, "backfill"
    )
    assert sorted(e.nominal_time_ms for e in first) == [lo, lo + HOUR_MS, lo + 2 * HOUR_MS]
    assert sorted(e.execution_id for e in again) == sorted(e.execution_id for e in first)
    for e in first:
        assert _final(client, e.execution_id).state == SUCCEEDED
    runs = list(client.list_executions(task.task_id))
    assert sorted(e.execution_id for e in runs) == sorted(e.execution_id for e in first)
    assert sorted(stamps.starts()) == sorted((e.execution_id, 1) for e in first)


def test_cancel_task(env: Env, client: Client) -> None:
    task = _task(client, command("true"))
    first, again = _twice(lambda rid: client.cancel_task(task.task_id, request_id=rid), env, "cancel")
    assert first.state == again.state == common_pb2.TASK_CANCELLED
    assert client.get_task(task.task_id).state == common_pb2.TASK_CANCELLED
    assert _audit(client, "CancelTask", task.task_id) == 1


def test_delete_task(env: Env, client: Client) -> None:
    task = _task(client, command("true"))
    first, again = _twice(lambda rid: client.delete_task(task.task_id, request_id=rid), env, "delete")
    assert first.task.task_id == again.task.task_id == task.task_id
    assert not list(client.list_tasks(name_prefix=task.spec.name))
    assert _audit(client, "DeleteTask", task.task_id) == 1


def test_delete_tasks_in_bulk(env: Env, client: Client) -> None:
    tasks = [_task(client, command("true")) for _ in range(3)]
    ids = [t.task_id for t in tasks]
    rids = {i: _rid() for i in ids}
    # The leader dies after the first delete: that one is retried, the others go to the next leader.
    with _leader_dies_after_applying(env, f"delete:{rids[ids[0]]}"):
        first = client.delete_tasks(ids, request_ids=rids)
    assert first.ok and not first.errors and sorted(first.results) == sorted(ids), first.errors
    again = client.delete_tasks(ids, request_ids=first.request_ids)
    assert again.ok and sorted(again.results) == sorted(ids), again.errors
    for t in tasks:
        assert not list(client.list_tasks(name_prefix=t.spec.name))
        assert _audit(client, "DeleteTask", t.task_id) == 1


def test_import_tasks_once(env: Env, client: Client) -> None:
    prefix = next(_NAME) + "-imp"
    specs = [build_spec(f"{prefix}-{i}", every("1h"), command("true")) for i in range(5)]
    import_id = _rid()
    # Two batches: the leader dies after the first.
    with _leader_dies_after_applying(env, f"import:{import_id}-0"):
        first = client.import_tasks(specs, batch_size=3, import_id=import_id)
    assert first.total == 5 and first.retries >= 1, first
    ids = list(first.task_ids())
    again = client.import_tasks(specs, batch_size=3, import_id=import_id)
    assert (again.created, again.replayed) == (0, 5) and list(again.task_ids()) == ids
    stored = sorted((t.spec.name, t.task_id) for t in client.list_tasks(name_prefix=prefix))
    assert stored == sorted(zip((s.name for s in specs), ids, strict=True))


def _dead_letters(client: Client, stamps: Stamps, count: int) -> tuple[common_pb2.Task, list[str]]:
    """A task whose `count` triggered runs failed into the dead-letter queue (one attempt each)."""
    task = client.create_task(
        next(_NAME), every("1h"), stamps.payload(fails=True), max_attempts=1, retry=retry("200ms")
    )
    runs = [client.trigger_task(task.task_id).execution_id for _ in range(count)]
    for eid in runs:
        done = _final(client, eid)
        assert done.state == common_pb2.EXECUTION_FAILED and done.dead_lettered, done
    return task, runs


def test_dead_letter_redrive_once(env: Env, client: Client, stamps: Stamps) -> None:
    task, runs = _dead_letters(client, stamps, 2)
    stamps.flag.touch()  # the redriven runs succeed
    first, again = _twice(
        lambda rid: client.redrive_dead_letters(task_id=task.task_id, request_id=rid), env, "redrive"
    )
    assert sorted(e.execution_id for e in first) == sorted(e.execution_id for e in again) == sorted(runs)
    for eid in runs:
        done = _final(client, eid)
        assert done.state == SUCCEEDED and done.redrives == 1 and done.attempt == 2, done
    assert sorted(stamps.starts()) == sorted([(e, 1) for e in runs] + [(e, 2) for e in runs])
    assert not list(client.list_dead_letters(task_id=task.task_id))


def test_dead_letter_purge_once(env: Env, client: Client, stamps: Stamps) -> None:
    task, _ = _dead_letters(client, stamps, 2)
    first, again = _twice(
        lambda rid: client.purge_dead_letters(task_id=task.task_id, request_id=rid), env, "purge"
    )
    assert first == again == 2
    assert not list(client.list_dead_letters(task_id=task.task_id))
    assert client.purge_dead_letters(task_id=task.task_id) == 0


def test_calendar_put_and_delete(env: Env, client: Client) -> None:
    name = next(_NAME) + "-cal"
    cal = common_pb2.Calendar(name=name, exclude=[date_range_rule("2030-01-01..2030-01-02")])
    put, put_again = _twice(lambda rid: client.put_calendar(cal, request_id=rid), env, "calendar")
    assert put.name == put_again.name == name
    assert client.get_calendar(name).exclude == cal.exclude
    _twice(lambda rid: client.delete_calendar(name, request_id=rid), env, "calendar-delete")
    assert name not in {c.name for c in client.list_calendars()}
    assert _audit(client, "PutCalendar", name) == 1
    assert _audit(client, "DeleteCalendar", name) == 1


# -- the async client ---------------------------------------------------------------------------------


def test_async_create_and_trigger(env: Env, client: Client, stamps: Stamps) -> None:
    name = next(_NAME)

    async def create(rid: str) -> common_pb2.Task:
        async with AsyncClient(env.cluster.servers, timeout_s=30) as ac:
            return await ac.create_task(name, every("1h"), stamps.payload(), request_id=rid)

    async def trigger(task_id: str, rid: str) -> common_pb2.Execution:
        async with AsyncClient(env.cluster.servers, timeout_s=30) as ac:
            return await ac.trigger_task(task_id, request_id=rid)

    task, task_again = _twice(lambda rid: asyncio.run(create(rid)), env, "create")
    assert task.task_id == task_again.task_id
    assert [t.task_id for t in client.list_tasks(name_prefix=name)] == [task.task_id]
    run, run_again = _twice(lambda rid: asyncio.run(trigger(task.task_id, rid)), env, "trigger")
    assert run.execution_id == run_again.execution_id
    assert _final(client, run.execution_id).state == SUCCEEDED
    assert [e.execution_id for e in client.list_executions(task.task_id)] == [run.execution_id]
    assert stamps.starts() == [(run.execution_id, 1)]


def test_cancel_execution(env: Env, client: Client, stamps: Stamps) -> None:
    """Last in the module: the worker's report of the cancelled run is proposed by the leader some time
    after the test, an entry that a following test's armed failpoint could crash on instead of its own."""
    task = _task(client, stamps.payload(gated=True))
    run = client.trigger_task(task.task_id)
    wait_for(stamps.starts, 30, "the run to start")
    first, again = _twice(
        lambda rid: client.cancel_execution(run.execution_id, "fo", request_id=rid), env, "cancel-exec"
    )
    assert first.execution_id == again.execution_id == run.execution_id
    done = _final(client, run.execution_id)
    assert done.state == common_pb2.EXECUTION_CANCELLED and done.attempt == 1, done
    assert stamps.starts() == [(run.execution_id, 1)]
    assert _audit(client, "CancelExecution", run.execution_id) == 1


def test_the_crashes_followed_the_writes() -> None:
    """Last: most crashes came right after the write's own entry was applied (its request id in the dead
    leader's dedup table), so the cases above tested retries of writes already done, not only writes
    sent again to the next leader."""
    assert len(_HITS) >= 15 and sum(_HITS) >= len(_HITS) - 3, _HITS
