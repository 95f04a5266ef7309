"""What the leader core does with a worker's messages: heartbeats (renewals, the dispatch of acks, the
reconciliation of a worker's complete listing), results (proposed as Complete once checked against the
lease table, issue 13) and the holder check of output (`lease_check`).

Functions of `LeaderCore` (core.py), kept here so that each module does one job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from cronraft.daemon.leader.leases import Refusal
from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import commands_pb2, common_pb2, worker_pb2
from cronraft.raft import features
from cronraft.raft import state as sm
from cronraft.raft.codec import token_tuple

if TYPE_CHECKING:
    from cronraft.daemon.leader.core import LeaderCore

Command = commands_pb2.Command
# Taken from its class once: looked up on a message, a method costs a look-up of a field of that name first
# (upb; as in raft/records.py).
_copy_result = common_pb2.AttemptResult.CopyFrom
_parse_command = Command.FromString
Token = tuple[int, int]
# Results that arrive before the running leases are loaded (an outbox resent to a new leader before its
# Epoch commits) wait for them, up to this many; beyond it they are dropped and the workers resend them.
MAX_EARLY_RESULTS = 10_000


def heartbeat(
    core: LeaderCore,
    worker_id: str,
    leases: Sequence[worker_pb2.LeaseRef],
    mono_ms: int,
    echo_ms: int = 0,
    *,
    finished: Sequence[worker_pb2.LeaseRef] = (),
    complete_listing: bool = False,
    draining: bool = False,
) -> worker_pb2.HeartbeatAck:
    ack = worker_pb2.HeartbeatAck(idle_heartbeat_interval_ms=core.idle_heartbeat_ms())
    core.pool.heard_from(worker_id, mono_ms)
    w = core.pool.get(worker_id)
    if w is not None and draining:
        w.draining = True
    if w is not None and echo_ms > w.echo_ms:
        w.echo_ms = echo_ms
    if not core.ready:
        # The running leases are not loaded yet: renew nothing, revoke nothing. The worker keeps its
        # local deadline, and the next heartbeat (after the epoch commits) renews it.
        return ack
    verdict = core.keeper.renew(worker_id, leases, mono_ms, core.lease_deadline(mono_ms), core.completing)
    core.refusals.extend(verdict.forged)
    ack.renewed.extend(verdict.renewed)
    ack.revoked.extend(verdict.revoked)
    if core.keeper.cancelling and w is not None and w.connected:
        # A cancel this stream has not carried (asked for before the worker's stream to us, or before
        # this leader): sent again, or the payload runs on (LeaseKeeper.cancelling).
        for cancel in core.keeper.cancels_to_resend(worker_id, verdict.renewed, w.stream):
            core.outgoing.append((worker_id, worker_pb2.GatewayMessage(cancel=cancel)))
    if w is not None and w.connected and not w.reconciled:
        if complete_listing:
            w.reconciled = True
            core.keeper.reconcile(
                w.worker_id, w.incarnation, [*leases, *finished], core.term, mono_ms, stream=w.stream
            )
        else:
            ack.list_finished = True
    return ack


def results(
    core: LeaderCore,
    worker_id: str,
    results: Sequence[common_pb2.AttemptResult],
    now_ms: int,
    *,
    bound: bool = True,
) -> list[Command]:
    """Complete commands for a worker's results (the ack is sent once they commit).

    A result is proposed only when the lease of its execution is held by `worker_id` (issue 13: the
    fencing token alone, which readers could see, is not enough). A result about a lease held by
    another worker with the same token is forged: dropped, never acknowledged, and reported in
    `refusals`. A result about no lease of this worker otherwise (its attempt was fenced off, the
    execution ended) is stale: the state machine would reject it, so it is acknowledged at once
    without being proposed (the worker stops resending it, and nothing is applied). Before `ready`
    the running leases are not loaded: results wait for them (MAX_EARLY_RESULTS).

    `bound=False` (authentication off: a worker id is only a claim) skips the holder check, as
    before issue 13: the state machine checks the token. A worker restarted under another id with
    its predecessor's outbox then still reports its predecessor's results."""
    if not core.ready:
        room = max(0, MAX_EARLY_RESULTS - len(core.early_results))
        core.early_results.extend((worker_id, r, bound) for r in results[:room])
        return []
    cmds = []
    stale: list[str] = []
    # Until the cluster uses results (raft.features: a rolling upgrade from a release without them), a
    # Complete carries neither the result nor its bound, as that release's leader proposed it. Read until
    # found on (a level is never lowered: LeaderCore.results_kept).
    keep_results = core.results_kept
    if not keep_results:
        with core.kv.read() as txn:
            keep_results = core.results_kept = features.is_active(txn, features.RESULTS)
    limits = core.result_limits if keep_results else None
    # Its one field set, not the message copied (with upb a copy serializes and parses): the same bytes.
    max_result_bytes = limits.max_result_bytes if limits is not None else 0
    completing, leases = core.completing, core.keeper.leases
    # What needing_plans would find for a Complete of a lease whose end plans nothing: marked now, as the
    # lease is at hand (LeaseState.plan_free).
    spec_changes, mark_plan_free = core.plans.spec_changes, core.plans.mark
    made = core.made
    # What every Complete of this message starts from, its stamp and limits, serialized once: each is
    # parsed from it (one parse with upb costs less than making a message and setting those two fields, a
    # submessage's among them; ~1.7k instructions less per result).
    common = b""
    if limits is not None:
        head = Command(stamped_at_ms=now_ms)
        head.limits.max_result_bytes = max_result_bytes
        common = head.SerializeToString()
    for r in results:
        execution_id = r.execution_id
        t = r.token
        token = (t.term, t.index)
        key = (execution_id, token)
        if key in completing:
            continue
        lease = None
        if bound:
            # The common case first: the lease is this worker's (what lease_check says then, cheaper).
            lease = leases.get(execution_id)
            if lease is None or lease.worker_id != worker_id:
                verdict = lease_check(core, worker_id, execution_id, token, "result")
                if verdict == "stale":
                    stale.append(execution_id)
                if verdict:
                    continue
        completing[key] = worker_id
        if common:
            cmd = _parse_command(common)
        else:
            cmd = Command()  # fields set, not keywords: a message keyword is converted, then copied
            cmd.stamped_at_ms = now_ms
        if lease is not None and lease.plan_free == spec_changes:
            mark_plan_free(cmd)
        c = cmd.complete
        c.execution_id = execution_id
        ct = c.token
        ct.term, ct.index = token
        _copy_result(c.result, r)
        if limits is None:
            c.result.ClearField("result")
        cmds.append(cmd)
        made[id(cmd)] = (cmd, "complete", execution_id, token)
    if stale:
        core.outgoing.append(
            (worker_id, worker_pb2.GatewayMessage(acks=worker_pb2.ResultAcks(execution_ids=stale)))
        )
    return cmds


def lease_check(core: LeaderCore, worker_id: str, execution_id: str, token: Token, kind: str) -> str:
    """Whether a message of `worker_id` about the lease (`execution_id`, `token`) may be acted on:
    "" when the lease is this worker's (the state machine then checks the token), "stale" when it
    is not a lease of this worker (an attempt fenced off, an execution that ended), "forged" when
    another worker holds (or held) that very lease (recorded in `refusals`).

    Once `ready`, the lease table holds every running lease: a worker learns a token only from an
    offer sent after its Grant committed and was tracked here, so a result about no lease in the
    table is stale. Output may trail its result (the worker flushes it periodically) and arrives
    before `ready` too: for output the store says who held the lease with that token."""
    lease = core.keeper.get(execution_id)
    if lease is not None and (lease.token == token or kind == "result"):
        holder, holder_token = lease.worker_id, lease.token
    elif kind == "result" and core.ready:
        return "stale"
    else:
        ex = _current(core, execution_id, token)
        if ex is None:
            return "stale"  # the state machine would refuse it: not the execution's current token
        holder, holder_token = ex.worker_id or (ex.attempts[-1].worker_id if ex.attempts else ""), token
    if holder == worker_id:
        return ""
    if holder_token == token:
        core.refusals.append(Refusal(worker_id, execution_id, kind, holder))
        return "forged"
    return "stale"


def token_check(core: LeaderCore, execution_id: str, token: Token) -> str:
    """`lease_check` for a worker whose id is only a claim (authentication off): "" when `token` is the
    execution's current token (a lease in the table, or the stored execution's), else "stale". Its holder
    is not checked (any worker may say it is any other), but output the state machine would refuse is
    not proposed: a stream of 1 MiB chunks for executions that do not exist went into the Raft log as
    entries of megabytes and slowed replication to an entry a second (S12, docs/reliability.md)."""
    lease = core.keeper.get(execution_id)
    if lease is not None and lease.token == token:
        return ""
    return "" if _current(core, execution_id, token) is not None else "stale"


def _current(core: LeaderCore, execution_id: str, token: Token) -> common_pb2.Execution | None:
    """The stored execution, if `token` is its current token (None otherwise, or if the id is none)."""
    try:
        with core.kv.read() as txn:
            ex = sm.read_execution(txn, execution_id)
    except InvalidArgument:  # not an execution id: nothing to act on
        return None
    return ex if ex is not None and token_tuple(ex.token) == token else None


def take_early_results(core: LeaderCore, now_ms: int) -> list[Command]:
    early, core.early_results = core.early_results, []
    cmds: list[Command] = []
    for worker_id, r, bound in early:
        cmds.extend(results(core, worker_id, [r], now_ms, bound=bound))
    return cmds


__all__ = ["MAX_EARLY_RESULTS", "heartbeat", "lease_check", "results", "take_early_results", "token_check"]
