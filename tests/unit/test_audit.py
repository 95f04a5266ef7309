"""The audit log for the fault checker (raft.audit), the state machine's audit events, and the offline
digest (raft.digest)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import digest as digest_mod
from cronraft.raft.audit import AuditLog, read_audit
from cronraft.raft.codec import encode_batch, make_id
from cronraft.raft.kv import MemKV
from cronraft.raft.memreplicator import MemReplicator
from cronraft.raft.state import StateMachine
from cronraft.raft.store import LmdbKV
from tests.support.wait import wait_until

T0 = 1_767_225_600_000
Command = commands_pb2.Command


def tid(n: int) -> str:
    return make_id(T0, n.to_bytes(10, "big"))


def at_spec(when: int) -> common_pb2.TaskSpec:
    return common_pb2.TaskSpec(
        name="t",
        schedule=common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=when)),
        payload=common_pb2.Payload(command=common_pb2.CommandPayload(argv=["true"])),
    )


def script(task: str, eid: str) -> list[list[Command]]:
    """Entries: create, epoch 2, fire, grant, complete; then a stale complete and a stale expiry."""
    due = T0 + 1000
    tok = common_pb2.FencingToken(term=2, index=4)  # epoch term 2, the grant is entry 4
    stale = common_pb2.FencingToken(term=1, index=3)
    return [
        [Command(stamped_at_ms=T0, create_task=commands_pb2.CreateTask(task_id=task, spec=at_spec(due)))],
        [Command(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=2, leader_id="n1"))],
        [
            Command(
                stamped_at_ms=due, fire=commands_pb2.Fire(task_id=task, nominal_time_ms=due, execution_id=eid)
            )
        ],
        [
            Command(
                stamped_at_ms=due, grant=commands_pb2.Grant(execution_id=eid, worker_id="w1", lease_ttl_ms=1)
            )
        ],
        [
            Command(
                stamped_at_ms=due,
                complete=commands_pb2.Complete(
                    execution_id=eid, token=stale, result=common_pb2.AttemptResult(outcome=1)
                ),
            ),
            Command(
                stamped_at_ms=due,
                complete=commands_pb2.Complete(
                    execution_id=eid,
                    token=tok,
                    result=common_pb2.AttemptResult(outcome=common_pb2.ATTEMPT_SUCCEEDED),
                ),
            ),
            Command(stamped_at_ms=due, expire_lease=commands_pb2.ExpireLease(execution_id=eid, token=tok)),
        ],
    ]


def test_the_state_machine_reports_what_each_entry_did() -> None:
    machine = StateMachine(MemKV())
    machine.collect_events = True
    task, eid = tid(1), tid(2)
    per_entry = []
    for index, cmds in enumerate(script(task, eid), start=1):
        assert machine.apply_entry(index, encode_batch(cmds)) is not None
        per_entry.append(machine.take_events())
    assert machine.take_events() == []  # handed out once
    create, epoch, fire, grant, results = per_entry
    assert create == []
    assert epoch == [{"ev": "apply", "kind": "epoch", "index": 2, "term": 2, "leader_id": "n1"}]
    assert fire == [
        {
            "ev": "apply",
            "kind": "fire",
            "index": 3,
            "execution_id": eid,
            "task_id": task,
            "nominal_ms": T0 + 1000,
            "manual": False,
        }
    ]
    assert grant == [
        {
            "ev": "apply",
            "kind": "grant",
            "index": 4,
            "execution_id": eid,
            "task_id": task,
            "nominal_ms": T0 + 1000,
            "token": "2.4",
            "worker_id": "w1",
            "attempt": 1,
        }
    ]
    stale, accepted, late_expiry = results
    assert stale["kind"] == "complete" and stale["token"] == "1.3"
    assert stale["accepted"] is False and stale["reason"] == "stale_token"
    assert accepted == {
        "ev": "apply",
        "kind": "complete",
        "index": 5,
        "execution_id": eid,
        "token": "2.4",
        "accepted": True,
        "reason": "EXECUTION_SUCCEEDED",
        "outcome": "ATTEMPT_SUCCEEDED",
    }
    assert late_expiry == {
        "ev": "apply",
        "kind": "expire",
        "index": 5,
        "execution_id": eid,
        "token": "2.4",
        "accepted": False,
    }


def test_no_events_are_collected_unless_asked() -> None:
    machine = StateMachine(MemKV())
    for index, cmds in enumerate(script(tid(1), tid(2)), start=1):
        machine.apply_entry(index, encode_batch(cmds))
        assert machine.take_events() == []


def test_writer_stamps_flushes_on_its_own_and_on_close(tmp_path: Path) -> None:
    path = tmp_path / "a" / "n1.audit.jsonl"
    audit = AuditLog(path, "n1", flush_s=0.05)
    before = time.monotonic_ns()
    audit.record("role", leader=True, term=3)
    wait_until(
        lambda: path.exists() and path.read_text(), 5, "the flusher to write without close()", interval=0.01
    )
    (rec,) = read_audit(path)
    assert list(rec)[:3] == ["node", "mono_ns", "ev"]
    assert rec["node"] == "n1" and rec["ev"] == "role" and rec["leader"] is True and rec["term"] == 3
    assert before <= rec["mono_ns"] <= time.monotonic_ns()
    audit.write_all([{"ev": "apply", "kind": "epoch", "index": 1, "term": 3}])
    audit.close()
    audit.close()  # idempotent
    assert [r["ev"] for r in read_audit(path)] == ["role", "apply"]


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "n1.audit.jsonl"
    audit = AuditLog(path, "n1", flush_s=0.001)

    def write(k: int) -> None:
        for i in range(500):
            audit.record("dispatch", k=k, i=i)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    audit.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 2000
    recs = [json.loads(line) for line in lines]
    for k in range(4):
        assert [r["i"] for r in recs if r["k"] == k] == list(range(500))


def test_from_env_is_off_unless_set(tmp_path: Path) -> None:
    assert AuditLog.from_env("n1", {}) is None
    audit = AuditLog.from_env("n1", {"CRONRAFT_AUDIT_DIR": str(tmp_path)})
    assert audit is not None and audit.path == tmp_path / "n1.audit.jsonl"
    audit.close()


@pytest.mark.asyncio
async def test_the_mem_replicator_writes_apply_events(tmp_path: Path) -> None:
    machine = StateMachine(MemKV())
    machine.collect_events = True
    audit = AuditLog(tmp_path / "n1.audit.jsonl", "n1")
    rep = MemReplicator(machine.apply_entry, audit=audit, apply_events=machine.take_events)
    rep.start()
    for cmds in script(tid(1), tid(2)):
        await rep.propose(encode_batch(cmds), timeout_s=1)
    assert await rep.transfer_leadership(None) is False
    audit.close()
    kinds = [r["kind"] for r in read_audit(audit.path) if r["ev"] == "apply"]
    assert kinds == ["epoch", "fire", "grant", "complete", "complete", "expire"]


def _store(path: Path, entries: list[list[Command]]) -> None:
    kv = LmdbKV(path, map_size=64 << 20)
    machine = StateMachine(kv)
    for index, cmds in enumerate(entries, start=1):
        machine.apply_entry(index, encode_batch(cmds))
    kv.close()


def test_digest_is_equal_for_the_same_log_and_differs_otherwise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = script(tid(1), tid(2))
    _store(tmp_path / "a" / "state", entries)
    _store(tmp_path / "b" / "state", entries)
    _store(tmp_path / "c" / "state", entries[:-1])
    a, b, c = (digest_mod.digest(tmp_path / n) for n in "abc")
    assert a == b and a["applied_index"] == 5
    assert c["applied_index"] == 4 and c["digest"] != a["digest"]
    assert digest_mod.main([str(tmp_path / "a" / "state")]) == 0  # the environment folder works too
    assert json.loads(capsys.readouterr().out) == a
    assert digest_mod.main([str(tmp_path / "nothing")]) == 2
    assert "no LMDB store" in capsys.readouterr().err
