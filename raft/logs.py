"""Attempts' full stdout/stderr in the replicated state, bounded (pure; used by apply and by readers).

Output arrives in pieces (AppendOutput commands the leader batches from the workers' OutputChunks). A
piece is kept only if it carries the token of the execution's latest attempt, so a fenced-off attempt
cannot write into its successor's log. Each stream of each attempt is capped at MAX_BYTES_PER_STREAM
(the rest is dropped and the log marked truncated), and logs older than RETENTION_MS are pruned a few
executions per entry, so the store does not grow without bound.
"""

from __future__ import annotations

from cronraft.proto.v1 import common_pb2, scheduler_pb2
from cronraft.raft.codec import from_u64, id_bytes, token_tuple, u64
from cronraft.raft.kv import Txn

MAX_BYTES_PER_STREAM = 1 << 20
RETENTION_MS = 7 * 24 * 3600 * 1000
PRUNE_PER_ENTRY = 8
STDOUT, STDERR = 1, 2


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
    if raw is None and txn.get("logs_size", _head(exec16, ex.attempt, STDOUT + STDERR - stream)) is None:
        first_of_attempt = True
    else:
        first_of_attempt = False
    room = MAX_BYTES_PER_STREAM - size
    if room <= 0:
        return False
    piece = data[:room]
    txn.put("logs", head + u64(size), piece)
    txn.put("logs_size", head, u64(size + len(piece)))
    if first_of_attempt:
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


def prune(txn: Txn, before_ms: int) -> None:
    """Drop the logs of executions whose first output is older than `before_ms` (a few per call)."""
    if before_ms <= 0:
        return
    doomed = [
        k for k, _ in zip(txn.scan("logs_by_time", b"", u64(before_ms)), range(PRUNE_PER_ENTRY), strict=False)
    ]
    for key, _ in doomed:
        exec16 = key[8:24]
        for k, _ in list(txn.scan("logs", exec16, exec16 + b"\xff" * 14)):
            txn.delete("logs", k)
        for k, _ in list(txn.scan("logs_size", exec16, exec16 + b"\xff" * 6)):
            txn.delete("logs_size", k)
        txn.delete("logs_by_time", key)


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


__all__ = ["MAX_BYTES_PER_STREAM", "RETENTION_MS", "append", "prune", "read", "response"]
