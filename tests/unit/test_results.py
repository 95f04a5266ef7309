"""Results (issue 15): a process payload writes $CRONRAFT_RESULT_FILE, the worker reads it once the payload
exited (bounded, refused beyond the bound, never cut), and the state machine keeps it apart from the
execution, as the last attempt's, until the execution is deleted."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from fake_gateway import connected_stream, fake_leader, make_lease, offers, running_worker, worker_config

from cronraft.client._process_runner import AttemptRunner
from cronraft.client.worker.result_files import ResultFiles
from cronraft.clock import SystemClock
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import retention
from cronraft.raft.codec import id_bytes
from cronraft.raft.records import read_result
from cronraft.raft.state import list_executions, read_execution
from tests.unit.statelog import T0, Command, Log, complete, create, eid, epoch, grant, run, spec, tid

# ------------------------------------------------------------------------------------- state machine


def _stored(log: Log, execution: str) -> tuple[bytes | None, common_pb2.Execution]:
    with log.sm.kv.read() as txn:
        ex = read_execution(txn, execution)
        assert ex is not None
        return read_result(txn, id_bytes(execution)), ex


def test_a_result_is_kept_apart_from_its_execution() -> None:
    log = Log()
    log.ok(epoch())
    log.ok(create(tid(1), spec("report")))
    data = bytes(range(256)) * 100
    run(log, tid(1), eid(1), T0, result=data)
    stored, ex = _stored(log, eid(1))
    assert stored == data and ex.result_size == len(data)
    assert data not in ex.SerializeToString()  # listing executions stays cheap
    with log.sm.kv.read() as txn:
        page, _ = list_executions(txn, tid(1))
    assert page[0].result_size == len(data) and not page[0].return_value


def test_a_retried_executions_result_is_its_last_attempts() -> None:
    log = Log()
    log.ok(epoch())
    retry = common_pb2.RetryPolicy(initial_backoff_ms=1)
    log.ok(create(tid(1), spec("r", retry=retry, max_attempts=3)))
    log.ok(
        Command(stamped_at_ms=T0, trigger_task=commands_pb2.TriggerTask(task_id=tid(1), execution_id=eid(1)))
    )
    g = log.ok(grant(eid(1), T0 + 1))
    log.ok(complete(eid(1), g.execution.token, T0 + 5, common_pb2.ATTEMPT_FAILED, result=b"partial"))
    assert _stored(log, eid(1))[0] == b"partial"
    g = log.ok(grant(eid(1), T0 + 100))
    log.ok(complete(eid(1), g.execution.token, T0 + 105))
    stored, ex = _stored(log, eid(1))
    assert stored is None and ex.result_size == 0 and ex.state == common_pb2.EXECUTION_SUCCEEDED


def test_a_result_over_the_stamped_bound_fails_the_attempt_and_is_not_kept() -> None:
    log = Log()
    log.ok(epoch())
    log.ok(create(tid(1), spec("big")))
    log.ok(
        Command(stamped_at_ms=T0, trigger_task=commands_pb2.TriggerTask(task_id=tid(1), execution_id=eid(1)))
    )
    g = log.ok(grant(eid(1), T0 + 1))
    cmd = complete(eid(1), g.execution.token, T0 + 5, result=b"x" * 1001)
    cmd.limits.max_result_bytes = 1000
    log.ok(cmd)
    stored, ex = _stored(log, eid(1))
    assert stored is None and ex.result_size == 0
    assert ex.state == common_pb2.EXECUTION_FAILED
    assert "result of 1001 bytes is over max_result_bytes (1000)" in ex.error


def test_results_go_with_their_executions() -> None:
    log = Log()
    log.ok(epoch())
    log.ok(create(tid(1), spec("a", retention=common_pb2.Retention(keep_executions=1))))
    log.ok(create(tid(2), spec("b")))
    run(log, tid(1), eid(1), T0, result=b"one")
    run(log, tid(1), eid(2), T0 + 100, result=b"two")  # keep_executions 1: the first goes at this fire
    run(log, tid(2), eid(3), T0 + 200, result=b"three")
    with log.sm.kv.read() as txn:
        assert [k for k, _ in txn.scan("results")] == sorted([id_bytes(eid(2)), id_bytes(eid(3))])
    log.ok(Command(stamped_at_ms=T0 + 300, delete_task=commands_pb2.DeleteTask(task_id=tid(2))))
    with log.sm.kv.read() as txn:
        assert [k for k, _ in txn.scan("results")] == [id_bytes(eid(2))]
        ex = read_execution(txn, eid(2))
        assert ex is not None
    with log.sm.kv.write() as txn:
        retention.delete_execution(txn, ex)
        assert not list(txn.scan("results"))


# ---------------------------------------------------------------------------------------- result files


def test_result_files_are_private_and_fresh(tmp_path: Path) -> None:
    files = ResultFiles(None, base=tmp_path)
    a, b = files.new("e1", 100), files.new("e1", 100)
    assert a.path != b.path and a.path.parent == b.path.parent
    assert stat.S_IMODE(a.path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(a.path.stat().st_mode) == 0o600 and a.path.stat().st_size == 0
    a.path.write_bytes(b"\x00\xffdata")
    assert a.take() == (b"\x00\xffdata", "") and not a.path.exists()
    b.path.unlink()
    assert b.take() == (b"", "")  # removed by the payload: no result
    files.close()
    assert not a.path.parent.exists()


def test_a_result_file_over_the_bound_is_refused_not_cut(tmp_path: Path) -> None:
    f = ResultFiles(None, base=tmp_path).new("e1", 10)
    f.path.write_bytes(b"x" * 11)
    data, error = f.take()
    assert data == b"" and "11 bytes" in error and "max_result_bytes (10)" in error
    assert not f.path.exists()


def test_a_result_file_replaced_by_a_link_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"not yours")
    f = ResultFiles(None, base=tmp_path).new("e1", 100)
    f.path.unlink()
    os.symlink(secret, f.path)
    data, error = f.take()
    assert data == b"" and "CRONRAFT_RESULT_FILE" in error
    assert secret.read_bytes() == b"not yours" and not f.path.is_symlink()


# ------------------------------------------------------------------------------------------- runner


def _runner(tmp_path: Path, script: str, bound: int, **kw: object) -> AttemptRunner:
    files = ResultFiles(None, base=tmp_path)
    lease = make_lease("e1", argv=["/bin/sh", "-c", script], **kw)  # type: ignore[arg-type]
    return AttemptRunner(
        lease,
        clock=SystemClock(),
        kill_grace_s=0.2,
        base_env={"PATH": os.environ["PATH"], "CRONRAFT_RESULT_FILE": "/etc/passwd"},
        result_file=lambda: files.new("e1", bound),
    )


@pytest.mark.asyncio
async def test_a_process_payload_hands_its_result_back_byte_exact(tmp_path: Path) -> None:
    runner = _runner(tmp_path, r'printf "a\000b\377\n" > "$CRONRAFT_RESULT_FILE"', 100)
    r = await runner.run()
    assert r.outcome == common_pb2.ATTEMPT_SUCCEEDED and r.result == b"a\x00b\xff\n"
    assert not any(tmp_path.glob("*/*.result"))  # read and removed


@pytest.mark.asyncio
async def test_a_failed_payload_hands_its_result_back_too(tmp_path: Path) -> None:
    r = await _runner(tmp_path, 'echo why > "$CRONRAFT_RESULT_FILE"; exit 3', 100).run()
    assert r.outcome == common_pb2.ATTEMPT_FAILED and r.exit_code == 3 and r.result == b"why\n"


@pytest.mark.asyncio
async def test_a_result_over_the_bound_fails_the_attempt_with_a_clear_error(tmp_path: Path) -> None:
    r = await _runner(tmp_path, 'head -c 2000 /dev/zero > "$CRONRAFT_RESULT_FILE"', 1000).run()
    assert r.outcome == common_pb2.ATTEMPT_FAILED and r.exit_code == 0 and not r.result
    assert r.error.startswith("result too large: 2000 bytes") and "max_result_bytes (1000)" in r.error


@pytest.mark.asyncio
async def test_a_killed_payloads_result_file_is_dropped(tmp_path: Path) -> None:
    runner = _runner(tmp_path, 'echo x > "$CRONRAFT_RESULT_FILE"; sleep 30', 100, timeout_ms=300)
    r = await runner.run()
    assert r.outcome == common_pb2.ATTEMPT_TIMED_OUT and not r.result
    assert not any(tmp_path.glob("*/*.result"))


# ------------------------------------------------------------------------------------------- worker


@pytest.mark.asyncio
async def test_the_worker_takes_the_leaders_bound_when_smaller(tmp_path: Path) -> None:
    script = 'head -c 600 /dev/zero > "$CRONRAFT_RESULT_FILE"'
    async with fake_leader() as leader:
        leader.welcome.max_result_bytes = 500
        async with running_worker(worker_config([leader.address], tmp_path, max_result_bytes=1000)):
            stream = await connected_stream(leader)
            stream.put_nowait(offers(make_lease("e1", argv=["/bin/sh", "-c", script])))
            r = await leader.result_for("e1")
    assert r.outcome == common_pb2.ATTEMPT_FAILED and "max_result_bytes (500)" in r.error
