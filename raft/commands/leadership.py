"""Epoch: a new leader's first command in its term; the term fences every lease it grants (I5)."""

from __future__ import annotations

from cronraft.proto.v1 import commands_pb2
from cronraft.raft.commands.context import Ctx
from cronraft.raft.records import META_EPOCH, read_epoch
from cronraft.raft.rejection import Code, Rejected


def epoch(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    cur = read_epoch(ctx.txn)
    if cmd.epoch.term == cur.term and cmd.epoch.leader_id == cur.leader_id:
        # The same leader proposing its epoch again: a retry after a proposal that timed out but did
        # apply. Refusing it made that leader step back while it still led the Raft group, and nothing
        # was dispatched until the next election (found by S4 at soak size: 4 minutes without a ready
        # leader). Applied, with nothing to change.
        return
    if cmd.epoch.term <= cur.term:
        raise Rejected(Code.STALE_EPOCH, f"epoch {cmd.epoch.term} is not newer than {cur.term}")
    ctx.txn.put("meta", META_EPOCH, cmd.epoch.SerializeToString(deterministic=True))
    if ctx.events is not None:
        ctx.audit("epoch", term=cmd.epoch.term, leader_id=cmd.epoch.leader_id)


__all__ = ["epoch"]
