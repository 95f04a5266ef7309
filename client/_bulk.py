"""The client side of the bulk API (`ImportTasks`), free of I/O: batching, request ids, the result.

An import sends batches of specs (at most `MAX_BATCH` specs and `MAX_BATCH_BYTES` each) over a client
stream; the cluster creates each batch whole or not at all, in one replicated entry. The SDK sends the
batches in segments of `SEGMENT_BATCHES` per call: a segment is kept in memory until its call answers,
so a failed call (leader change, timeout) is resent whole to the new leader, and its batches that had
been created are answered from the cluster's dedup table instead of being created twice. Batch `n` of
import `import_id` carries the request id `<import_id>-<n>`, so re-running the same import (same input,
same batch size, same import id) after a crash creates only what is missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2, scheduler_pb2

__all__ = ["MAX_BATCH", "MAX_BATCH_BYTES", "SEGMENT_BATCHES", "ImportResult", "batch_ids", "segments"]

MAX_BATCH = 1000
MAX_BATCH_BYTES = 2 << 20  # well under the server's 3 MiB per batch and 8 MiB per message
SEGMENT_BATCHES = 25

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DECODE = {c: i for i, c in enumerate(_ALPHABET)}


def _id_int(text: str) -> int:
    n = 0
    for c in text.upper():
        n = (n << 5) | _DECODE[c]
    return n


def _id_text(n: int) -> str:
    out = []
    for _ in range(26):
        out.append(_ALPHABET[n & 31])
        n >>= 5
    return "".join(reversed(out))


def batch_ids(first_task_id: str, count: int) -> list[str]:
    """The task ids of an imported batch: `first_task_id + 0 .. count - 1` as 128-bit integers."""
    first = _id_int(first_task_id)
    return [_id_text(first + i) for i in range(count)]


@dataclass
class ImportResult:
    """What an import created. `batches` are the cluster's answers in order (`request_id`,
    `first_task_id`, `count`, `replayed`); `task_ids()` lists every id in input order."""

    import_id: str
    created: int = 0  # tasks the cluster created on the answered calls
    # Tasks of batches the cluster had already created, answered from its dedup table: by an earlier run
    # of the same import, or by an attempt of this one whose answer was lost (see `retries`).
    replayed: int = 0
    batches: list[scheduler_pb2.ImportedBatch] = field(default_factory=list)
    retries: int = 0  # calls sent again after a retryable failure (leader change, timeout)

    @property
    def total(self) -> int:
        return self.created + self.replayed

    def add(self, response: scheduler_pb2.ImportTasksResponse) -> None:
        self.created += response.created
        self.replayed += response.replayed
        self.batches.extend(response.batches)

    def task_ids(self) -> Iterator[str]:
        for b in self.batches:
            yield from batch_ids(b.first_task_id, b.count)


def _batches(specs: Iterable[common_pb2.TaskSpec], batch_size: int) -> Iterator[list[common_pb2.TaskSpec]]:
    batch: list[common_pb2.TaskSpec] = []
    size = 0
    for spec in specs:
        if not isinstance(spec, common_pb2.TaskSpec):
            raise InvalidArgument("specs", f"expected TaskSpec messages, got {type(spec).__name__}")
        n = spec.ByteSize() + 8
        if batch and (len(batch) >= batch_size or size + n > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(spec)
        size += n
    if batch:
        yield batch


def segments(
    specs: Iterable[common_pb2.TaskSpec],
    *,
    import_id: str,
    batch_size: int = MAX_BATCH,
    segment_batches: int = SEGMENT_BATCHES,
) -> Iterator[list[scheduler_pb2.ImportTasksRequest]]:
    """The requests of an import, grouped by call. Reads `specs` lazily (one segment at a time)."""
    if not 1 <= batch_size <= MAX_BATCH:
        raise InvalidArgument("batch_size", f"must be between 1 and {MAX_BATCH}, got {batch_size}")
    if not import_id or len(import_id) > 100:
        raise InvalidArgument("import_id", "must be 1 to 100 characters")
    segment: list[scheduler_pb2.ImportTasksRequest] = []
    for n, batch in enumerate(_batches(specs, batch_size)):
        segment.append(scheduler_pb2.ImportTasksRequest(request_id=f"{import_id}-{n}", specs=batch))
        if len(segment) >= segment_batches:
            yield segment
            segment = []
    if segment:
        yield segment
