"""AppendOutput: a chunk of an execution's live output, kept by raft.output if its token is current."""

from __future__ import annotations

from cronraft.proto.v1 import commands_pb2
from cronraft.raft import output
from cronraft.raft.codec import id_bytes
from cronraft.raft.commands.context import Ctx, Execution
from cronraft.raft.rejection import Code, Rejected


def append_output(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    a = cmd.append_output
    raw = ctx.txn.get("execs", id_bytes(a.execution_id, field="execution_id"))
    if raw is None:
        raise Rejected(Code.NOT_FOUND, f"execution {a.execution_id} not found")
    ex = Execution()
    ex.ParseFromString(raw)
    if not output.append(ctx.txn, ex, a.token, stream=a.stream, data=a.data, now_ms=ctx.now):
        ctx.result.applied = False  # a chunk for a lease that is not current: dropped, no text
        ctx.result.error_code = Code.REFUSED.value


__all__ = ["append_output"]
