"""The grants a leader's commands carry, in either form: a Grant command, or a Fire carrying its Grant
(cluster feature "fire_grant", raft/features.py; what a leader proposes once the feature is in force)."""

from __future__ import annotations

from collections.abc import Iterable

from cronraft.proto.v1 import commands_pb2


def grants_in(cmds: Iterable[commands_pb2.Command]) -> list[commands_pb2.Grant]:
    """Every grant of `cmds`, in order: Grant commands and the grants Fires carry."""
    out: list[commands_pb2.Grant] = []
    for cmd in cmds:
        kind = cmd.WhichOneof("body")
        if kind == "grant":
            out.append(cmd.grant)
        elif kind == "fire" and cmd.fire.HasField("grant"):
            out.append(cmd.fire.grant)
    return out


def granted_executions(
    cmds: Iterable[commands_pb2.Command], results: Iterable[commands_pb2.CommandResult]
) -> list[str]:
    """The executions `cmds` leased, as their results say (a Fire's grant may have been refused)."""
    out: list[str] = []
    for cmd, res in zip(cmds, results, strict=True):
        kind = cmd.WhichOneof("body")
        if kind == "grant" and res.applied:
            out.append(cmd.grant.execution_id)
        elif (
            kind == "fire"
            and cmd.fire.HasField("grant")
            and res.applied
            and res.execution.worker_id
            and res.execution.execution_id == cmd.fire.grant.execution_id
        ):
            out.append(res.execution.execution_id)
    return out
