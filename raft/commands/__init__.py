# ruff: noqa: E402
"""The commands of the state machine, by subject, and the one dispatch table `HANDLERS`.

`raft.state` decodes a log entry and calls `HANDLERS[kind](ctx, cmd)` for each command, `kind` being the
name of the set field of `Command.body` (commands.proto). Every handler checks everything that can refuse
the command before it writes, and refuses by raising `Rejected` (raft.rejection) or `InvalidArgument`:
a refused command leaves no partial effect in the entry's transaction.

| module | commands |
|---|---|
| tasks | create_task, import_tasks, update_task, cancel_task, pause_task, resume_task |
| fires | fire, trigger_task, backfill_task (overlap: raft.overlap; misfire: raft.firing) |
| executions | cancel_execution, note_waiting, expire_pending (and finish / request_cancel / terminate) |
| leases | grant, complete, expire_lease |
| dead_letters | redrive_dead_letters, purge_dead_letters |
| calendars | put_calendar, delete_calendar |
| output_chunks | append_output |
| leadership | epoch |
| features | raise_features (the cluster's feature level: raft.features) |
| pruning | delete_task, prune (retention) |
| membership | change_membership (the member list; daemon.membership drives it) |
"""

from __future__ import annotations

from cronraft import _native

# Before the imports below (hence E402 off in this file): the compiled commands, when built and current,
# load in their place.
_native.extend_path(__path__, __name__)

from cronraft.raft.commands import (
    calendars,
    dead_letters,
    executions,
    features,
    fires,
    leadership,
    leases,
    membership,
    output_chunks,
    pruning,
    tasks,
)
from cronraft.raft.commands.context import Ctx, Handler
from cronraft.raft.commands.executions import finish
from cronraft.raft.commands.fires import start_execution
from cronraft.raft.commands.leases import DEFAULT_MAX_ATTEMPTS, MAX_REGRANTS
from cronraft.raft.commands.tasks import MAX_IMPORT_BATCH

# Command kind (the `Command.body` field set) -> handler. Tests may replace an entry (monkeypatch):
# raft.state looks the handler up in this very dict for each command.
HANDLERS: dict[str, Handler] = {
    "create_task": tasks.create_task,
    "import_tasks": tasks.import_tasks,
    "update_task": tasks.update_task,
    "cancel_task": tasks.cancel_task,
    "pause_task": tasks.pause_task,
    "resume_task": tasks.resume_task,
    "trigger_task": fires.trigger_task,
    "backfill_task": fires.backfill_task,
    "epoch": leadership.epoch,
    "fire": fires.fire,
    "grant": leases.grant,
    "complete": leases.complete,
    "expire_lease": leases.expire_lease,
    "cancel_execution": executions.cancel_execution,
    "redrive_dead_letters": dead_letters.redrive_dead_letters,
    "purge_dead_letters": dead_letters.purge_dead_letters,
    "append_output": output_chunks.append_output,
    "note_waiting": executions.note_waiting,
    "expire_pending": executions.expire_pending,
    "put_calendar": calendars.put_calendar,
    "delete_calendar": calendars.delete_calendar,
    "delete_task": pruning.delete_task,
    "prune": pruning.prune,
    "change_membership": membership.change_membership,
    "raise_features": features.raise_features,
}

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "HANDLERS",
    "MAX_IMPORT_BATCH",
    "MAX_REGRANTS",
    "Ctx",
    "Handler",
    "finish",
    "start_execution",
]
