"""The worker agent against a scripted, in-process leader (a fake `WorkerGateway` on a loopback port).

The fake leader lives in fake_gateway.py. Synchronisation is by events and queues fed by the fake; every
wait is bounded. Runner and outbox tests run without gRPC.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from fake_gateway import (
    WAIT_S,
    connected_stream,
    fake_leader,
    get,
    heartbeat_listing,
    make_lease,
    offers,
    running_worker,
    worker_clock,
    worker_config,
)

from cronraft.client._process_runner import AttemptRunner
from cronraft.client._runner import FENCED_ERROR, StopReason, TailBuffer
from cronraft.client.worker import Worker, build_parser, config_from_args, parse_duration
from cronraft.client.worker.outbox import Outbox, result_key
from cronraft.clock import SystemClock
from cronraft.proto.v1 import common_pb2, worker_pb2
from tests.support.wait import wait_until_async

PY = sys.executable


def process_gone(pid: int) -> bool:
    """True once `pid` has exited (absent, or a zombie waiting for a reaper that is not us)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


# -- the stream -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_hello_first_then_a_lease_succeeds_with_its_token_and_idempotency_key(tmp_path: Path) -> None:
    async with fake_leader() as leader, running_worker(worker_config([leader.address], tmp_path)) as worker:
        first = await get(leader.first_messages)
        assert first.WhichOneof("kind") == "hello"
        assert first.hello.worker_id == "w-test"
        assert first.hello.capacity == 3
        assert list(first.hello.queues) == ["default", "etl"]
        assert dict(first.hello.labels) == {"zone": "a"}
        stream = await connected_stream(leader)
        code = (
            "import os; e = os.environ; print(e['CRONRAFT_EXECUTION_ID']); "
            "print(e['CRONRAFT_FENCING_TOKEN'], e['CRONRAFT_NOMINAL_TIME'], e['CRONRAFT_ATTEMPT'], e['MINE'])"
        )
        lease = make_lease("exec-ok", argv=[PY, "-c", code], token=(3, 42), env={"MINE": "yes"})
        stream.put_nowait(offers(lease))
        result = await leader.result_for("exec-ok")
        assert result.outcome == common_pb2.ATTEMPT_SUCCEEDED
        assert result.exit_code == 0
        assert result.token == lease.token
        lines = result.stdout_tail.decode().splitlines()
        assert lines[0] == "exec-ok"
        assert lines[1] == "3.42 2023-11-14T22:13:20.000Z 1 yes"
        assert 0 < result.started_at_ms <= result.finished_at_ms
        # acked -> deleted
        await wait_until_async(lambda: len(worker.outbox) == 0, WAIT_S, "the outbox emptied")
        assert not list(tmp_path.iterdir())


@pytest.mark.asyncio
async def test_non_zero_exit_is_failed_with_the_exit_code(tmp_path: Path) -> None:
    async with fake_leader() as leader, running_worker(worker_config([leader.address], tmp_path)):
        stream = await connected_stream(leader)
        code = "import sys; sys.stderr.write('boom'); sys.exit(3)"
        stream.put_nowait(offers(make_lease("exec-fail", argv=[PY, "-c", code])))
        result = await leader.result_for("exec-fail")
        assert result.outcome == common_pb2.ATTEMPT_FAILED
        assert result.exit_code == 3
        assert result.stderr_tail == b"boom"


@pytest.mark.asyncio
async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    async with fake_leader() as leader, running_worker(worker_config([leader.address], tmp_path)):
        stream = await connected_stream(leader)
        # The shell starts a child (the grandchild of the worker) and waits for it.
        lease = make_lease("exec-slow", script="sleep 30 & echo $!; wait", timeout_ms=300)
        stream.put_nowait(offers(lease))
        result = await leader.result_for("exec-slow")
        assert result.outcome == common_pb2.ATTEMPT_TIMED_OUT
        assert "timed out after 300 ms" in result.error
        grandchild = int(result.stdout_tail.split()[0])
        await wait_until_async(lambda: process_gone(grandchild), WAIT_S, "the grandchild gone")


@pytest.mark.asyncio
async def test_cancel_attempt_kills_it_and_reports_cancelled(tmp_path: Path) -> None:
    async with fake_leader() as leader, running_worker(worker_config([leader.address], tmp_path)):
        stream = await connected_stream(leader)
        started = tmp_path / "started"
        lease = make_lease("exec-cancel", script=f"touch {started}; exec sleep 30", token=(2, 7))
        stream.put_nowait(offers(lease))
        await heartbeat_listing(leader, {"exec-cancel"})
        # a cancel before the start would end it unstarted instead
        await wait_until_async(started.exists, WAIT_S, "the payload started")
        cancel = worker_pb2.CancelAttempt(execution_id="exec-cancel", token=lease.token)
        stream.put_nowait(worker_pb2.GatewayMessage(cancel=cancel))
        result = await leader.result_for("exec-cancel")
        assert result.outcome == common_pb2.ATTEMPT_CANCELLED
        assert result.exit_code == 128 + 15  # SIGTERM was enough
        assert result.token == lease.token


@pytest.mark.asyncio
async def test_heartbeats_list_running_leases_and_a_revoked_one_is_killed_silently(tmp_path: Path) -> None:
    async with fake_leader() as leader, running_worker(worker_config([leader.address], tmp_path)) as worker:
        stream = await connected_stream(leader)
        pid_file = tmp_path / "revoked.pid"
        keep = make_lease("exec-keep", argv=["sleep", "30"], token=(1, 10))
        doomed = make_lease("exec-doomed", script=f"echo $$ > {pid_file}; exec sleep 30", token=(1, 11))
        stream.put_nowait(offers(keep, doomed))
        heartbeat = await heartbeat_listing(leader, {"exec-keep", "exec-doomed"})
        assert {(r.execution_id, r.token.term, r.token.index) for r in heartbeat.leases} == {
            ("exec-keep", 1, 10),
            ("exec-doomed", 1, 11),
        }
        await wait_until_async(
            lambda: pid_file.exists() and pid_file.read_text().strip() != "", WAIT_S, "the pid file"
        )
        pid = int(pid_file.read_text())
        leader.revoke.add("exec-doomed")
        await heartbeat_listing(leader, {"exec-keep"})  # no longer renewed, no longer listed
        await wait_until_async(lambda: process_gone(pid), WAIT_S, "the process gone")
        # Finish the other one: the only result the leader ever sees is exec-keep's.
        stream.put_nowait(
            worker_pb2.GatewayMessage(cancel=worker_pb2.CancelAttempt(execution_id="exec-keep"))
        )
        result = await leader.result_for("exec-keep")
        assert result.outcome == common_pb2.ATTEMPT_CANCELLED
        assert leader.results.empty()
        assert worker.running == []
        assert len(worker.outbox) == 0 or all(r.execution_id == "exec-keep" for r in worker.outbox.pending())


@pytest.mark.asyncio
async def test_live_output_is_streamed_in_chunks(tmp_path: Path) -> None:
    async with fake_leader() as leader, running_worker(worker_config([leader.address], tmp_path)):
        stream = await connected_stream(leader)
        code = "import sys; print('hello'); sys.stdout.flush(); sys.stderr.write('warn\\n')"
        stream.put_nowait(offers(make_lease("exec-out", argv=[PY, "-c", code])))
        result = await leader.result_for("exec-out")
        assert result.stdout_tail == b"hello\n"
        await wait_until_async(
            lambda: {c.stream for c in leader.outputs} == {worker_pb2.STDOUT, worker_pb2.STDERR},
            WAIT_S,
            "output on both streams",
        )
        out = b"".join(c.data for c in leader.outputs if c.stream == worker_pb2.STDOUT)
        assert out == b"hello\n"
        assert all(c.execution_id == "exec-out" and c.token.index == 1 for c in leader.outputs)


@pytest.mark.asyncio
async def test_result_is_in_the_outbox_before_it_is_sent_and_survives_a_restart(tmp_path: Path) -> None:
    async with fake_leader() as leader:
        leader.ack_results = False
        marker = tmp_path / "runs"
        outbox_dir = tmp_path / "outbox"
        lease = make_lease("exec-durable", script=f"echo run >> {marker}; echo done", token=(5, 9))
        async with running_worker(worker_config([leader.address], outbox_dir)) as worker:
            stream = await connected_stream(leader)
            stream.put_nowait(offers(lease))
            sent = await leader.result_for("exec-durable")
            # On disk before the leader saw it: a fresh load of the directory finds it.
            assert result_key(sent) in Outbox(outbox_dir)
            assert len(worker.outbox) == 1
        # Restart on the same outbox: the result is delivered on connect, the payload is not re-run.
        leader.ack_results = True
        async with running_worker(worker_config([leader.address], outbox_dir)) as worker:
            redelivered = await leader.result_for("exec-durable")
            assert redelivered == sent
            await wait_until_async(lambda: len(worker.outbox) == 0, WAIT_S, "the outbox emptied")
        assert marker.read_text() == "run\n"
        assert not [p for p in outbox_dir.iterdir() if p.suffix == ".result"]


@pytest.mark.asyncio
async def test_duplicate_offer_of_an_unacknowledged_result_is_not_rerun(tmp_path: Path) -> None:
    async with fake_leader() as leader, running_worker(worker_config([leader.address], tmp_path / "o")):
        leader.ack_results = False
        stream = await connected_stream(leader)
        marker = tmp_path / "runs"
        lease = make_lease("exec-once", script=f"echo run >> {marker}")
        stream.put_nowait(offers(lease))
        await leader.result_for("exec-once")
        # Offered again (e.g. the leader redelivered): ignored; a later lease proves it was processed.
        stream.put_nowait(offers(lease, make_lease("exec-next", argv=["true"])))
        await leader.result_for("exec-next")
        assert marker.read_text() == "run\n"


@pytest.mark.asyncio
async def test_not_leader_redirects_to_the_leader(tmp_path: Path) -> None:
    async with (
        fake_leader() as leader,
        fake_leader(not_leader=leader.address) as follower,
        running_worker(worker_config([follower.address], tmp_path)) as worker,
    ):
        assert (await get(follower.first_messages)).WhichOneof("kind") == "hello"
        assert (await get(leader.first_messages)).hello.worker_id == "w-test"
        await connected_stream(leader)
        await asyncio.wait_for(worker.connected.wait(), WAIT_S)


@pytest.mark.asyncio
async def test_unavailable_with_leader_trailer_redirects(tmp_path: Path) -> None:
    async with (
        fake_leader() as leader,
        fake_leader(unavailable_leader=leader.address) as follower,
        running_worker(worker_config([follower.address], tmp_path)),
    ):
        await get(follower.first_messages)
        stream = await connected_stream(leader)
        stream.put_nowait(offers(make_lease("exec-r", argv=["true"])))
        assert (await leader.result_for("exec-r")).outcome == common_pb2.ATTEMPT_SUCCEEDED


@pytest.mark.asyncio
async def test_unreachable_server_is_skipped_round_robin(tmp_path: Path) -> None:
    async with fake_leader() as dead:
        dead_address = dead.address
    async with (
        fake_leader() as leader,
        running_worker(worker_config([dead_address, leader.address], tmp_path)),
    ):
        await connected_stream(leader)


@pytest.mark.asyncio
async def test_self_fencing_kills_an_attempt_whose_lease_is_not_renewed(tmp_path: Path) -> None:
    async with fake_leader(heartbeat_interval_ms=100, lease_ttl_ms=600) as leader:
        leader.answer_heartbeats = False  # partitioned: heartbeats go nowhere
        async with running_worker(worker_config([leader.address], tmp_path / "o")):
            stream = await connected_stream(leader)
            pid_file = tmp_path / "fenced.pid"
            stream.put_nowait(
                offers(make_lease("exec-fenced", script=f"echo $$ > {pid_file}; exec sleep 30"))
            )
            result = await leader.result_for("exec-fenced")
            assert result.outcome == common_pb2.ATTEMPT_FAILED
            assert result.error == FENCED_ERROR
            assert result.exit_code == 128 + 9  # no grace: SIGKILL at the deadline
            await wait_until_async(
                lambda: process_gone(int(pid_file.read_text())), WAIT_S, "the process gone"
            )


@pytest.mark.asyncio
async def test_graceful_stop_lets_attempts_finish_within_the_grace_then_kills_the_rest(
    tmp_path: Path,
) -> None:
    async with fake_leader() as leader:
        leader.ack_results = False
        worker = Worker(worker_config([leader.address], tmp_path, shutdown_grace_s=1.0))
        run = asyncio.create_task(worker.run())
        stream = await connected_stream(leader)
        quick = make_lease("exec-quick", script="sleep 0.3; echo finished")
        slow = make_lease("exec-slow", argv=["sleep", "30"])
        stream.put_nowait(offers(quick, slow))
        await heartbeat_listing(leader, {"exec-quick", "exec-slow"})
        worker.stop()
        draining = await get(leader.heartbeats)  # the leader hears at once: it offers nothing more
        while not draining.draining:
            draining = await get(leader.heartbeats)
        stream.put_nowait(offers(make_lease("exec-late", argv=["true"])))  # not taken any more
        await asyncio.wait_for(run, WAIT_S)
        outcomes = {r.execution_id: r for r in worker.outbox.pending()}
        assert outcomes.keys() == {"exec-quick", "exec-slow", "exec-late"}
        # Declined, not ignored: reported as never begun, so the cluster grants it to another worker.
        assert outcomes["exec-late"].outcome == common_pb2.ATTEMPT_NOT_STARTED
        assert outcomes["exec-late"].error == "worker shutting down; not started"
        assert outcomes["exec-quick"].outcome == common_pb2.ATTEMPT_SUCCEEDED
        assert outcomes["exec-quick"].stdout_tail == b"finished\n"
        assert outcomes["exec-slow"].outcome == common_pb2.ATTEMPT_FAILED
        assert outcomes["exec-slow"].error == "worker shut down; attempt killed"


@pytest.mark.asyncio
async def test_an_attempt_killed_at_the_end_of_the_grace_has_its_result_handed_in(tmp_path: Path) -> None:
    """The result of an attempt killed when the shutdown grace ran out is sent and acknowledged before
    the worker exits (docs/operations.md: it "stops the rest and hands their results in"). The wait for
    acknowledgements used to be what was left of the grace: nothing, so the result stayed in the outbox
    and its execution waited for its lease to expire, then ran again."""
    async with fake_leader() as leader:
        worker = Worker(worker_config([leader.address], tmp_path, shutdown_grace_s=0.3))
        run = asyncio.create_task(worker.run())
        stream = await connected_stream(leader)
        stream.put_nowait(offers(make_lease("exec-overrun", argv=["sleep", "30"])))
        await heartbeat_listing(leader, {"exec-overrun"})
        worker.stop()
        await asyncio.wait_for(run, WAIT_S)
        result = await leader.result_for("exec-overrun")
        assert result.error == "worker shut down; attempt killed"
        assert list(worker.outbox.pending()) == []  # acknowledged: nothing left to deliver


@pytest.mark.asyncio
async def test_renewal_moves_the_deadline_to_heartbeat_send_time_plus_ttl(tmp_path: Path) -> None:
    clock = worker_clock()
    async with fake_leader(heartbeat_interval_ms=20, lease_ttl_ms=1000) as leader:
        config = worker_config([leader.address], tmp_path)
        async with running_worker(config, clock=clock) as worker:
            stream = await connected_stream(leader)
            stream.put_nowait(offers(make_lease("exec-renew", argv=["sleep", "30"])))  # deadline 1001
            await heartbeat_listing(leader, {"exec-renew"})
            clock.advance_to(1000.9)
            # Two round trips after the clock moved: a heartbeat sent at 1000.9 has been renewed.
            for _ in range(3):
                await heartbeat_listing(leader, {"exec-renew"})
            clock.advance_to(1001.5)  # past the first deadline, before 1000.9 + 1
            for _ in range(3):
                await heartbeat_listing(leader, {"exec-renew"})
            assert [lease.execution_id for lease in worker.running] == ["exec-renew"]
            leader.answer_heartbeats = False
            clock.advance_to(1010.0)
            result = await leader.result_for("exec-renew")
            assert result.error == FENCED_ERROR


# -- the runner and the outbox, without gRPC --------------------------------------------------------


async def run_lease(lease: worker_pb2.Lease, **kwargs: Any) -> common_pb2.AttemptResult:
    runner = AttemptRunner(lease, clock=SystemClock(), **kwargs)
    return await asyncio.wait_for(runner.run(), WAIT_S)


@pytest.mark.asyncio
async def test_sigterm_is_escalated_to_sigkill_after_the_grace() -> None:
    lease = make_lease("exec-stubborn", script="trap '' TERM; sleep 30", timeout_ms=200)
    result = await run_lease(lease, kill_grace_s=0.3)
    assert result.outcome == common_pb2.ATTEMPT_TIMED_OUT
    assert result.exit_code == 128 + 9


@pytest.mark.asyncio
async def test_a_command_that_cannot_start_fails_with_127_or_126(tmp_path: Path) -> None:
    missing = await run_lease(make_lease("e1", argv=["/nonexistent/cronraft-cmd"]))
    assert missing.outcome == common_pb2.ATTEMPT_FAILED
    assert missing.exit_code == 127
    assert "/nonexistent/cronraft-cmd" in missing.error
    not_executable = tmp_path / "script.sh"
    not_executable.write_text("#!/bin/sh\necho hi\n")
    denied = await run_lease(make_lease("e2", argv=[str(not_executable)]))
    assert denied.exit_code == 126
    assert denied.outcome == common_pb2.ATTEMPT_FAILED
    empty = await run_lease(make_lease("e3", argv=[]))
    assert empty.exit_code == 127
    assert "argv is empty" in empty.error


@pytest.mark.asyncio
async def test_cwd_and_stdin_and_signal_deaths() -> None:
    lease = make_lease(
        "e", argv=[PY, "-c", "import os, sys; print(os.getcwd()); print(repr(sys.stdin.read()))"]
    )
    lease.payload.command.cwd = "/tmp"
    result = await run_lease(lease)
    assert result.stdout_tail.decode().splitlines() == [os.path.realpath("/tmp"), "''"]
    killed = await run_lease(make_lease("k", script="kill -9 $$"))
    assert killed.outcome == common_pb2.ATTEMPT_FAILED
    assert killed.exit_code == 137
    assert "SIGKILL" in killed.error


@pytest.mark.asyncio
async def test_output_tails_are_bounded() -> None:
    code = "import sys; sys.stdout.write('x' * 300_000 + 'END')"
    result = await run_lease(make_lease("big", argv=[PY, "-c", code]), output_tail_bytes=1000)
    assert len(result.stdout_tail) == 1000
    assert result.stdout_tail.endswith(b"xEND")
    tail = TailBuffer(4)
    for piece in (b"ab", b"cdef", b"g"):
        tail.append(piece)
    assert tail.value() == b"defg"


@pytest.mark.asyncio
async def test_stop_before_exit_uses_the_first_reason() -> None:
    runner = AttemptRunner(make_lease("s", argv=["sleep", "30"]), clock=SystemClock(), kill_grace_s=1)
    task = asyncio.create_task(runner.run())
    await wait_until_async(lambda: runner.pid is not None, WAIT_S, "the runner's process")
    runner.stop(StopReason.CANCELLED)
    runner.stop(StopReason.TIMEOUT)
    result = await asyncio.wait_for(task, WAIT_S)
    assert result.outcome == common_pb2.ATTEMPT_CANCELLED


def test_outbox_is_durable_and_tolerates_debris(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    token = common_pb2.FencingToken(term=1, index=2)
    result = common_pb2.AttemptResult(
        execution_id="a/../b", token=token, outcome=common_pb2.ATTEMPT_SUCCEEDED
    )
    outbox.put(result)
    (tmp_path / "x.1.1.result.123.tmp").write_bytes(b"half")
    (tmp_path / "bad.1.1.result").write_bytes(b"\xff\xff\xff")
    reloaded = Outbox(tmp_path)
    assert reloaded.pending() == [result]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("h-")) == [
        "bad.1.1.result.corrupt"
    ]
    assert reloaded.remove([result_key(result), ("unknown", 0, 0)]) == 1
    assert len(Outbox(tmp_path)) == 0


def test_cli_defaults_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = build_parser()
    config = config_from_args(parser.parse_args(["--id", "w1"]), environ={"CRONRAFT_SERVER": "h1:1,h2:2"})
    assert config.servers == ("h1:1", "h2:2")
    assert config.outbox_dir == Path("data/worker-w1/outbox")
    assert config.capacity == 4
    assert config.queues == ("default",)
    args = parser.parse_args(
        [
            *("--server", "a:1,b:2", "--id", "w2", "--capacity", "8", "--queue", "q1", "--queue", "q2"),
            *("--label", "zone=a", "--kill-grace", "500ms", "--outbox-dir", "/tmp/ob"),
        ]
    )
    config = config_from_args(args, environ={})
    assert config.servers == ("a:1", "b:2")
    assert config.queues == ("q1", "q2")
    assert dict(config.labels) == {"zone": "a"}
    assert config.kill_grace_s == 0.5
    assert config.outbox_dir == Path("/tmp/ob")
    assert config_from_args(parser.parse_args([]), environ={}).servers == ("127.0.0.1:50051",)
    assert parse_duration("2m") == 120.0
    with pytest.raises(SystemExit):
        parser.parse_args(["--label", "novalue"])
