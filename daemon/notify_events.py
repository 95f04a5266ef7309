"""Which notification events a committed batch produces (pure).

- an execution that ended `failed` or `lost` (after its retries): failure; `timed_out`: timeout;
- a dead letter created by a result or an expiry: dead_letter;
- nominal times recorded as missed_downtime by a fire: missed (one event per task per batch).
Executions waiting for a retry are not final and produce nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from cronraft.proto.v1 import commands_pb2, common_pb2

_FINAL_EVENTS = {
    common_pb2.EXECUTION_FAILED: common_pb2.NOTIFY_FAILURE,
    common_pb2.EXECUTION_LOST: common_pb2.NOTIFY_FAILURE,
    common_pb2.EXECUTION_TIMED_OUT: common_pb2.NOTIFY_TIMEOUT,
}


@dataclass(frozen=True)
class Event:
    event: int
    task_id: str
    execution: common_pb2.Execution | None = None
    records: tuple[common_pb2.FireRecord, ...] = ()
    dead_letter: common_pb2.DeadLetter | None = None


def notification_events(
    cmds: Sequence[commands_pb2.Command], results: Sequence[commands_pb2.CommandResult]
) -> Iterator[Event]:
    for cmd, res in zip(cmds, results, strict=True):
        if not res.applied:
            continue
        kind = cmd.WhichOneof("body")
        if kind in ("complete", "expire_lease"):
            final: dict[str, common_pb2.Execution] = {}
            for ex in res.executions:
                final[ex.execution_id] = ex
            for ex in final.values():
                event = _FINAL_EVENTS.get(ex.state)
                if event is not None:
                    yield Event(event, ex.task_id, execution=ex)
            for letter in res.dead_letters:
                yield Event(
                    common_pb2.NOTIFY_DEAD_LETTER,
                    letter.task_id,
                    execution=final.get(letter.execution_id),
                    dead_letter=letter,
                )
        if res.missed:
            by_task: dict[str, list[common_pb2.FireRecord]] = {}
            for rec in res.missed:
                by_task.setdefault(rec.task_id, []).append(rec)
            for task_id, recs in by_task.items():
                yield Event(common_pb2.NOTIFY_MISSED, task_id, records=tuple(recs))


__all__ = ["Event", "notification_events"]
