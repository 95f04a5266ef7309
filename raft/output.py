"""Attempts' full stdout/stderr in the replicated state, bounded (pure; used by apply and by readers).

Output arrives in pieces (AppendOutput commands the leader batches from the workers' OutputChunks). A
piece is kept only if it carries the token of the execution's latest attempt, so a fenced-off attempt
cannot write into its successor's log. Each stream of each attempt is capped at MAX_BYTES_PER_STREAM
(the rest is dropped and the log marked truncated). An execution's logs go when it is deleted
(`delete`, from raft.retention) or, earlier, once they are older than the cluster's log retention
(`prune`, from the Prune command: `[retention] log_max_age_s`).

Keys: `logs` holds the pieces (execution + attempt + stream + offset), `logs_size` the bytes stored per
stream of each attempt, plus one marker per execution (attempt 0, stream 0: never a real stream) whose
value is the time of the execution's first piece, which is also its key in `logs_by_time`: so deleting
an execution finds its `logs_by_time` entry without a scan. (Stores written before the marker have one
`logs_by_time` entry per attempt and no marker; `prune` still removes those as they age.)
"""

from __future__ import annotations

from cronraft.proto.v1 import common_pb2, scheduler_pb2
from cronraft.raft.codec import from_u64, id_bytes, token_tuple, u64
from cronraft.raft.kv import Txn

MAX_BYTES_PER_STREAM = 1 << 20
STDOUT, STDERR = 1, 2
_MARKER = b"\0\0\0\0\0"  # attempt 0, stream 0: the execution's first-piece time (module docstring)


def _head(exec16: bytes, attempt: int, stream: int) -> bytes:
    return exec16 + attempt.to_bytes(4, "big") + bytes([stream])


def append(
    txn: Txn,
    ex: common_pb2.Execution,
    token: common_pb2.FencingToken,
    *,
    stream: int,
    data: bytes,
    now_ms: int,
) -> bool:
    """Store a piece of output; False when refused (stale token, unknown stream, or over the cap)."""
    if stream not in (STDOUT, STDERR) or token_tuple(token) != token_tuple(ex.token) or not data:
        return False
    exec16 = id_bytes(ex.execution_id)
    head = _head(exec16, ex.attempt, stream)
    raw = txn.get("logs_size", head)
    size = 0 if raw is None else from_u64(raw)
    room = MAX_BYTES_PER_STREAM - size
    if room <= 0:
        return False
    piece = data[:room]
    txn.put("logs", head + u64(size), piece)
    txn.put("logs_size", head, u64(size + len(piece)))
    if raw is None and txn.get("logs_size", exec16 + _MARKER) is None:  # the execution's first piece
        txn.put("logs_size", exec16 + _MARKER, u64(now_ms))
        txn.put("logs_by_time", u64(now_ms) + exec16, b"")
    return True


def read(
    txn: Txn, execution_id: str, attempt: int, stream: int, *, offset: int, max_bytes: int
) -> tuple[bytes, int, bool]:
    """(bytes from `offset`, next offset, truncated) of one stream of one attempt."""
    head = _head(id_bytes(execution_id, field="execution_id"), attempt, stream)
    raw = txn.get("logs_size", head)
    size = 0 if raw is None else from_u64(raw)
    out = bytearray()
    # Pieces are keyed by their start offset: begin at the piece containing `offset`.
    start_key = head + u64(0)
    for k, _ in txn.scan("logs", head, head + u64(offset + 1), reverse=True):
        start_key = k
        break
    for k, v in txn.scan("logs", start_key, head + b"\xff" * 8 + b"\xff"):
        piece_start = from_u64(k[-8:])
        lo = max(0, offset - piece_start)
        out += v[lo:]
        if len(out) >= max_bytes:
            break
    chunk = bytes(out[:max_bytes])
    return chunk, offset + len(chunk), size >= MAX_BYTES_PER_STREAM


def delete(txn: Txn, exec16: bytes) -> None:
    """Remove every piece of an execution's output, its sizes and its `logs_by_time` entry. Its sizes are
    read first, in one scan: a piece is only ever written with its stream's size (`append`) and they go
    together, so an execution without sizes has no piece either (most executions print nothing) and
    `logs` is not looked at; the marker, if any, is the first size (attempt 0, stream 0). Whether there
    is any is asked first with one seek (`Txn.first`, cheaper than an empty scan): usually there is none."""
    end = exec16 + b"\xff" * 6
    if txn.first("logs_size", exec16, end) is None:
        return
    sizes = list(txn.scan("logs_size", exec16, end))
    first, at = sizes[0]
    if first == exec16 + _MARKER:
        txn.delete("logs_by_time", at + exec16)
    for k, _ in list(txn.scan("logs", exec16, exec16 + b"\xff" * 14)):
        txn.delete("logs", k)
    for k, _ in sizes:
        txn.delete("logs_size", k)


def prune(txn: Txn, before_ms: int, *, limit: int) -> int:
    """Drop the logs of at most `limit` executions whose first piece is older than `before_ms` (their
    executions are kept). Returns how many."""
    if before_ms <= 0 or limit <= 0:
        return 0
    doomed = [k for k, _ in zip(txn.scan("logs_by_time", b"", u64(before_ms)), range(limit), strict=False)]
    for key, _ in doomed:
        exec16 = key[8:24]
        delete(txn, exec16)
        txn.delete("logs_by_time", key)  # an entry of a store written before the marker
    return len(doomed)


def response(
    txn: Txn,
    ex: common_pb2.Execution,
    attempt: int,
    *,
    stdout_offset: int,
    stderr_offset: int,
    max_bytes: int,
) -> scheduler_pb2.GetExecutionLogsResponse:
    attempt = attempt or ex.attempt
    out, out_next, out_trunc = read(
        txn, ex.execution_id, attempt, STDOUT, offset=stdout_offset, max_bytes=max_bytes
    )
    err, err_next, err_trunc = read(
        txn, ex.execution_id, attempt, STDERR, offset=stderr_offset, max_bytes=max_bytes
    )
    live = attempt == ex.attempt and ex.state == common_pb2.EXECUTION_RUNNING
    return scheduler_pb2.GetExecutionLogsResponse(
        attempt=attempt,
        stdout=out,
        stderr=err,
        stdout_next_offset=out_next,
        stderr_next_offset=err_next,
        finished=not live and len(out) < max_bytes and len(err) < max_bytes,
        truncated=out_trunc or err_trunc,
    )


__all__ = ["MAX_BYTES_PER_STREAM", "append", "delete", "prune", "read", "response"]
