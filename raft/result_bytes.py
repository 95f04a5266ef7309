"""The results apply answers with, as bytes: an entry's `BatchResult`, assembled from its commands'
serialized `CommandResult`s (repeated field 1); a result spliced from records just stored (`answered`);
and a request's result kept in the dedup table (`remember`), which answers the request when seen again.

Why bytes: the proposer reads the entry's result as bytes (a leader's: raft.apply_thread), and appending
each result to a BatchResult message, or copying a stored record into a result, would copy it first (with
upb a copy serializes and parses). A protobuf message's serialization is its fields' encodings one after
the other, in the order of their numbers, so both are concatenations that give the bytes of the message
so filled (tests/unit/test_apply_answer.py compares them with the filled message's serialization).
"""

from __future__ import annotations

from itertools import islice

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft.codec import CodecError, message_field, u64, varint
from cronraft.raft.kv import Txn
from cronraft.raft.rejection import Code, Rejection

CommandResult = commands_pb2.CommandResult
Execution = common_pb2.Execution
Task = common_pb2.Task

# Requests are remembered this long for deduplication (measured in stamped leader time).
DEDUP_RETENTION_MS = 24 * 3600 * 1000
# At most this many expired dedup records are pruned per entry, to bound the cost of one apply.
DEDUP_PRUNE_PER_ENTRY = 64

# From the class once: looked up on a message, a method costs a look-up of a field of that name (upb).
_result_bytes = CommandResult.SerializeToString

# The result of a command nobody reads (`apply_entry(wanted=False)`): an empty CommandResult as an element
# of a BatchResult, so that the entry's result still counts its commands (daemon.metrics.count_results).
UNREAD_RESULT = message_field(1, b"")
RESULT_TAG = UNREAD_RESULT[:1]  # BatchResult.results (field 1, length-delimited)
# Lengths as varints, looked up for those of most results and records (under 4 KiB): `varint` is a call,
# which costs more than the rest of a length's part in the assembly (about 140 kB, once per process).
_LENGTHS = tuple(varint(n) for n in range(4096))

# The fields of a CommandResult that `answered` writes itself: `applied` (1) true, `task` (4), `execution`
# (5) and an element of `executions` (7), each a tag; and the first byte of the tag of the first field that
# may follow what is spliced in after `applied`: field 5 (after a task alone), field 7 (after an execution).
_APPLIED = b"\x08\x01"
_TASK_TAG = b"\x22"
_EXECUTION_TAG = b"\x2a"
_EXECUTIONS_TAG = b"\x3a"
_FIELD_5 = 0x28
_FIELD_7 = 0x38


def element(res: CommandResult) -> tuple[bytes, bytes, bytes]:
    """`res` as an element of a BatchResult: tag, length, serialized result (joined by the caller)."""
    encoded = _result_bytes(res, deterministic=True)
    n = len(encoded)
    return RESULT_TAG, _LENGTHS[n] if n < 4096 else varint(n), encoded


def codec_failure(e: CodecError) -> bytes:
    """The BatchResult of an entry that does not decode: one refusal, the same on every node."""
    return message_field(1, Rejection(Code.CODEC, str(e)).result().SerializeToString(deterministic=True))


def answered(res: CommandResult, execution: bytes | None, task: bytes | None) -> list[bytes]:
    """`res` with a record just stored as its answer (Ctx.answer, Ctx.answer_task), as an element of a
    BatchResult (tag, length, then the result's parts; joined by the caller): `execution`, the bytes of an
    Execution, as the result's `execution` and the first of its `executions`; `task`, the bytes of a Task,
    as its `task`. Each is the record as stored (records.put_execution, put_task_same_spec), so the result
    holds the same bytes as if it had been filled with the message (a Task's are those of
    `deterministic=True`, and an Execution holds no map: codec.MAPLESS) and copied nowhere.

    The answers go between `applied` and the rest when nothing numbered 2 to 6 (2 to 4 without an
    execution) is set (a handler that leaves an answer sets none); anything else is filled as a message."""
    rest = _result_bytes(res, deterministic=True)
    after = _FIELD_7 if execution is not None else _FIELD_5
    if rest[:2] != _APPLIED or (len(rest) > 2 and rest[2] < after):
        return list(element(_filled(res, execution, task)))
    size = len(rest)  # the result's own length: `rest`, and what goes in (`applied` is in `rest` too)
    parts = [RESULT_TAG, b"", _APPLIED]
    if task is not None:
        n = len(task)
        length = _LENGTHS[n] if n < 4096 else varint(n)
        parts += (_TASK_TAG, length, task)
        size += 1 + len(length) + n
    if execution is not None:
        n = len(execution)
        length = _LENGTHS[n] if n < 4096 else varint(n)
        parts += (_EXECUTION_TAG, length, execution, _EXECUTIONS_TAG, length, execution)
        size += 2 * (1 + len(length) + n)
    parts.append(rest[2:])
    parts[1] = _LENGTHS[size] if size < 4096 else varint(size)
    return parts


def _filled(res: CommandResult, execution: bytes | None, task: bytes | None) -> CommandResult:
    """`res` filled with the answers as messages (`answered`, when they do not go in as bytes)."""
    full = CommandResult()
    full.CopyFrom(res)
    if task is not None:
        full.task.ParseFromString(task)
    if execution is not None:
        full.execution.ParseFromString(execution)
        del full.executions[:]
        full.executions.add().ParseFromString(execution)
        full.executions.extend(res.executions)
    return full


def remember(txn: Txn, request_id: str, stamped_at_ms: int, res: CommandResult, *, first: bool) -> None:
    """Keep `res` as the answer to `request_id` (raft.state answers the request from it when seen again),
    for DEDUP_RETENTION_MS. `first`: the entry's first command, which prunes expired records."""
    txn.put("requests", request_id.encode(), res.SerializeToString(deterministic=True))
    txn.put("requests_by_time", u64(stamped_at_ms) + request_id.encode(), b"")
    if first:
        _prune_requests(txn, stamped_at_ms - DEDUP_RETENTION_MS)


def _prune_requests(txn: Txn, before_ms: int) -> None:
    if before_ms <= 0:
        return
    doomed = [k for k, _ in islice(txn.scan("requests_by_time", b"", u64(before_ms)), DEDUP_PRUNE_PER_ENTRY)]
    for k in doomed:
        txn.delete("requests_by_time", k)
        txn.delete("requests", k[8:])


__all__ = [
    "DEDUP_PRUNE_PER_ENTRY",
    "DEDUP_RETENTION_MS",
    "RESULT_TAG",
    "UNREAD_RESULT",
    "answered",
    "codec_failure",
    "element",
    "remember",
]
