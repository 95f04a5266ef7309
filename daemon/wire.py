"""Checks of what arrives on the wire before anything is proposed: request fields and worker messages.

The bounds themselves are in `cronraft.bounds` (and, for task specs and calendars, in the state machine's
validation, which the servicers call too). Each check raises `InvalidArgument` naming the field and the
bound; a worker message over a bound ends its stream with INVALID_ARGUMENT (`worker_problem` says why).
A worker's results are cut to what the state machine keeps (`bounded_results`), never refused: a result
is the record of a run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from cronraft import bounds
from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2, worker_pb2
from cronraft.raft.codec import id_bytes

_CALENDAR_NAME = re.compile(rf"[A-Za-z0-9_.\-]{{1,{bounds.MAX_CALENDAR_NAME}}}")
_QUEUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")


def check_length(text: str, field: str, most: int) -> None:
    if len(text) > most:
        raise InvalidArgument(field, f"longer than {most} characters")


def check_id(text: str, field: str) -> None:
    id_bytes(text, field=field)  # InvalidArgument naming `field` unless a 26-character id


def check_ids(ids: Sequence[str], field: str, most: int) -> None:
    """A list of execution ids (bulk operations): at most `most`, each an id."""
    if len(ids) > most:
        raise InvalidArgument(field, f"at most {most} ids, got {len(ids)}")
    for i, text in enumerate(ids):
        check_id(text, f"{field}[{i}]")


def check_limit(n: int, field: str, most: int) -> None:
    if not 0 <= n <= most:
        raise InvalidArgument(field, f"must be between 0 (the default) and {most}")


def calendar_name(name: str, field: str) -> None:
    if not _CALENDAR_NAME.fullmatch(name):
        raise InvalidArgument(
            field, f"not a calendar name: 1 to {bounds.MAX_CALENDAR_NAME} characters from A-Z a-z 0-9 _ . -"
        )


def executions_page_token(token: str) -> None:
    """ListExecutions' tokens are a nominal time: up to 20 digits, below 2^64."""
    if token and (len(token) > 20 or not token.isdigit() or not token.isascii() or int(token) >= 1 << 64):
        raise InvalidArgument("page_token", "not a token returned by a previous ListExecutions call")


# --------------------------------------------------------------------------------------- workers


def _printable(text: str) -> bool:
    return text.isprintable() and not any(c.isspace() for c in text)


def hello_problem(hello: worker_pb2.Hello) -> str:
    """Why a worker's Hello is refused ("" if it is not): `field: problem`."""
    if not hello.worker_id or len(hello.worker_id) > bounds.MAX_WORKER_ID or not _printable(hello.worker_id):
        return f"hello.worker_id: must be 1 to {bounds.MAX_WORKER_ID} printable characters without spaces"
    if not 0 <= hello.capacity <= bounds.MAX_WORKER_CAPACITY:
        return f"hello.capacity: must be between 0 and {bounds.MAX_WORKER_CAPACITY}"
    if len(hello.queues) > bounds.MAX_WORKER_QUEUES:
        return f"hello.queues: at most {bounds.MAX_WORKER_QUEUES} queues, got {len(hello.queues)}"
    for i, q in enumerate(hello.queues):
        if not _QUEUE.fullmatch(q):
            return (
                f"hello.queues[{i}]: must be 1..64 characters of [A-Za-z0-9_.-], not starting with a symbol"
            )
    if len(hello.labels) > bounds.MAX_WORKER_LABELS:
        return f"hello.labels: at most {bounds.MAX_WORKER_LABELS} labels, got {len(hello.labels)}"
    for k, v in hello.labels.items():
        if not k or len(k) > bounds.MAX_TAG_LEN or len(v) > bounds.MAX_TAG_LEN:
            most = bounds.MAX_TAG_LEN
            return f"hello.labels: keys 1 to {most} characters, values at most {most}"
    if len(hello.incarnation) > bounds.MAX_INCARNATION:
        return f"hello.incarnation: longer than {bounds.MAX_INCARNATION} characters"
    return ""


def worker_problem(msg: worker_pb2.WorkerMessage) -> str:
    """Why a message on an established worker stream is refused ("" if it is not)."""
    kind = msg.WhichOneof("kind")
    if kind == "heartbeat":
        hb = msg.heartbeat
        most = bounds.MAX_HEARTBEAT_LEASES
        if len(hb.leases) > most:
            return f"heartbeat.leases: at most {most} leases, got {len(hb.leases)}"
        if len(hb.finished) > most:
            return f"heartbeat.finished: at most {most} leases, got {len(hb.finished)}"
    elif kind == "results":
        n = len(msg.results.results)
        if n > bounds.MAX_RESULTS_PER_MESSAGE:
            return f"results.results: at most {bounds.MAX_RESULTS_PER_MESSAGE} results per message, got {n}"
    elif kind == "output":
        size = len(msg.output.data)
        if size > bounds.MAX_OUTPUT_CHUNK_BYTES:
            return f"output.data: at most {bounds.MAX_OUTPUT_CHUNK_BYTES} bytes per chunk, got {size}"
    elif kind == "hello":
        return "hello: only the first message of a stream is a Hello"
    else:
        return "kind: empty message (set heartbeat, results or output)"
    return ""


def bounded_results(results: Sequence[common_pb2.AttemptResult]) -> list[common_pb2.AttemptResult]:
    """The results cut to what the state machine keeps of them (the last MAX_RESULT_TAIL_BYTES of each
    tail, the first MAX_RETURN_VALUE_BYTES of a return value, MAX_RESULT_ERROR characters of an error),
    so that the entry carrying them is no larger than needed."""
    out = []
    tail, ret, err = bounds.MAX_RESULT_TAIL_BYTES, bounds.MAX_RETURN_VALUE_BYTES, bounds.MAX_RESULT_ERROR
    for r in results:
        if (
            len(r.stdout_tail) > tail
            or len(r.stderr_tail) > tail
            or len(r.return_value) > ret
            or len(r.error) > err
        ):
            cut = common_pb2.AttemptResult()
            cut.CopyFrom(r)
            cut.stdout_tail = r.stdout_tail[-tail:]
            cut.stderr_tail = r.stderr_tail[-tail:]
            cut.return_value = r.return_value[:ret]
            cut.error = r.error[:err]
            out.append(cut)
        else:
            out.append(r)
    return out


__all__ = [
    "bounded_results",
    "calendar_name",
    "check_id",
    "check_ids",
    "check_length",
    "check_limit",
    "executions_page_token",
    "hello_problem",
    "worker_problem",
]
