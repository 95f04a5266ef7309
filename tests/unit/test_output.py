"""Attempts' full output: fenced by token, capped, readable from offsets, pruned after retention."""

from __future__ import annotations

from cronraft.proto.v1 import common_pb2
from cronraft.raft import output
from cronraft.raft.codec import id_bytes, make_id
from cronraft.raft.kv import MemKV

T0 = 1_767_225_600_000


def _ex(attempt: int = 1, token: tuple[int, int] = (1, 10)) -> common_pb2.Execution:
    return common_pb2.Execution(
        execution_id=make_id(T0, b"\1" * 10),
        attempt=attempt,
        token=common_pb2.FencingToken(term=token[0], index=token[1]),
        state=common_pb2.EXECUTION_RUNNING,
    )


def test_pieces_concatenate_and_read_from_any_offset() -> None:
    kv = MemKV()
    ex = _ex()
    with kv.write() as txn:
        for piece in (b"hello ", b"wide ", b"world\n"):
            assert output.append(txn, ex, ex.token, stream=output.STDOUT, data=piece, now_ms=T0)
        assert output.append(txn, ex, ex.token, stream=output.STDERR, data=b"oops", now_ms=T0)
    with kv.read() as txn:
        assert output.read(txn, ex.execution_id, 1, output.STDOUT, offset=0, max_bytes=100) == (
            b"hello wide world\n",
            17,
            False,
        )
        assert output.read(txn, ex.execution_id, 1, output.STDOUT, offset=8, max_bytes=4) == (
            b"de w",
            12,
            False,
        )
        resp = output.response(txn, ex, 0, stdout_offset=0, stderr_offset=0, max_bytes=1000)
    assert resp.stderr == b"oops" and not resp.finished  # still running


def test_a_stale_token_cannot_write_into_the_latest_attempt() -> None:
    kv = MemKV()
    ex = _ex(attempt=2, token=(2, 20))
    with kv.write() as txn:
        assert not output.append(
            txn, ex, common_pb2.FencingToken(term=1, index=10), stream=output.STDOUT, data=b"old", now_ms=T0
        )
    with kv.read() as txn:
        assert output.read(txn, ex.execution_id, 2, output.STDOUT, offset=0, max_bytes=100)[0] == b""


def test_each_stream_is_capped_and_marked_truncated() -> None:
    kv = MemKV()
    ex = _ex()
    big = b"x" * (output.MAX_BYTES_PER_STREAM - 10)
    with kv.write() as txn:
        assert output.append(txn, ex, ex.token, stream=output.STDOUT, data=big, now_ms=T0)
        assert output.append(
            txn, ex, ex.token, stream=output.STDOUT, data=b"y" * 100, now_ms=T0
        )  # only 10 bytes fit
        assert not output.append(txn, ex, ex.token, stream=output.STDOUT, data=b"z", now_ms=T0)
    with kv.read() as txn:
        data, _, truncated = output.read(
            txn, ex.execution_id, 1, output.STDOUT, offset=0, max_bytes=2 * output.MAX_BYTES_PER_STREAM
        )
    assert len(data) == output.MAX_BYTES_PER_STREAM and data.endswith(b"y" * 10) and truncated


def test_logs_older_than_the_retention_are_pruned() -> None:
    kv = MemKV()
    ex = _ex()
    with kv.write() as txn:
        output.append(txn, ex, ex.token, stream=output.STDOUT, data=b"old", now_ms=T0)
    with kv.write() as txn:
        assert output.prune(txn, T0, limit=10) == 0  # not older than T0
        assert output.prune(txn, T0 + 1, limit=10) == 1
    with kv.read() as txn:
        assert output.read(txn, ex.execution_id, 1, output.STDOUT, offset=0, max_bytes=100)[0] == b""
        assert list(txn.scan("logs_by_time")) == []
        assert list(txn.scan("logs_size")) == []


def test_delete_removes_every_piece_and_index_entry() -> None:
    kv = MemKV()
    ex = _ex()
    with kv.write() as txn:
        output.append(txn, ex, ex.token, stream=output.STDOUT, data=b"out", now_ms=T0)
        output.append(txn, ex, ex.token, stream=output.STDERR, data=b"err", now_ms=T0 + 5)
        ex.attempt, ex.token.index = 2, 11
        output.append(txn, ex, ex.token, stream=output.STDOUT, data=b"again", now_ms=T0 + 9)
    with kv.read() as txn:
        assert len(list(txn.scan("logs_by_time"))) == 1  # one entry per execution: its first piece
    with kv.write() as txn:
        output.delete(txn, id_bytes(ex.execution_id))
    with kv.read() as txn:
        assert all(list(txn.scan(db)) == [] for db in ("logs", "logs_size", "logs_by_time"))
