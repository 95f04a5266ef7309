"""This node's membership (docs/operations.md, "Membership changes"): the member list the node sees, the
changes the leader carries through, a learner's promotion, and a removed node stepping out.

The member list is the state machine's (raft.commands.membership; before the cluster's first change, the
list the data directory recorded, daemon.datadir). `MembershipManager.refresh` reads it every turn of its
loop and, when its version moved, hands the node the members it sees (`on_members`: status, clock
probes, leader hints, the versions check), tells the replicator their ids, records the list in the data
directory's identity, and acts on what the change means for this node:

- a learner (started with `schedd --join`) whose addition began, having applied that entry, is caught up
  to it: the replicator promotes it to a voter in place (raft.replicator `Reconfigurable.promote`);
- a voter no longer in the list (nor being added) was removed: its Raft stops for good
  (`Reconfigurable.leave`), its identity says so, and it answers as "removed".

On the leader (`drive`, once its leader duties run) the change in flight is carried through: an addition
waits until the joining node answers as a promoted voter that applied the entry that began it (its
`Cluster.Clock` answer: role and applied index), then the Raft configuration takes it
(`change_voters`), then FINISH is proposed; a removal has the configuration drop the node (a leader that
is itself to go hands leadership over first: pysyncobj cannot remove the leader), then FINISH. Any leader
does this for a change its predecessor began: the step it finds done in the configuration is skipped.

A removed node that missed the end of its removal (the leader stops replicating to it once the
configuration drops it) learns it from the members: while it has heard no leader for a few election
timeouts (it knows none, or is not connected to the one it names), it asks them (`Cluster.Clock` with
its id and Raft address); an answer that it is not a member as of a newer membership version than its
own means it was removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import grpc
import structlog

from cronraft.client._transport import Transport
from cronraft.daemon.config.model import Member
from cronraft.daemon.datadir import JOINING, MEMBER, REMOVED, Claim
from cronraft.errors import CronraftError
from cronraft.proto.v1 import cluster_pb2, cluster_pb2_grpc, commands_pb2, membership_pb2
from cronraft.raft.commands.membership import describe, pairs, read_membership
from cronraft.raft.kv import KV
from cronraft.raft.replicator import RaftMember, RaftStatus, Reconfigurable

log = structlog.get_logger("cronraft.membership")

Membership = membership_pb2.Membership
Change = membership_pb2.MembershipChange
ClusterMember = membership_pb2.ClusterMember

INTERVAL_S = 0.2  # one turn of the loop
_CHANGE_TIMEOUT_S = 10.0  # a configuration change committing
_PROBE_TIMEOUT_S = 1.0
_TRANSFER_EVERY_S = 1.0
_ASK_EVERY_S = 1.0
LEADERLESS_TIMEOUTS = 3  # election timeouts without a leader before a voter asks whether it was removed

# Member.role / the member roles of cluster status.
VOTER, JOINING_ROLE, LEAVING = "voter", "joining", "leaving"


class _Replicator(Reconfigurable, Protocol):
    def status(self) -> RaftStatus: ...

    async def transfer_leadership(self, target: str | None) -> bool: ...


def to_member(m: ClusterMember) -> Member:
    return Member(m.node_id, m.grpc_address, m.raft_address)


def to_cluster_member(m: Member) -> ClusterMember:
    return ClusterMember(node_id=m.id, grpc_address=m.grpc_address, raft_address=m.raft_address)


def _same(a: ClusterMember, me: Member) -> bool:
    return a.node_id == me.id and a.raft_address == me.raft_address


def initial_role(claim: Claim, stored: Membership | None, me: Member) -> tuple[bool, bool]:
    """(start as a learner, hold elections) for a node starting with `claim` over its store's `stored`
    list: a joining node is a learner until its addition began; from then on a voter that stands only
    once it has heard from a leader (until the leader added it, it is outside the configuration)."""
    if claim.state != JOINING:
        return False, False
    if stored is not None and (_adding(stored, me) or any(_same(m, me) for m in stored.members)):
        return False, True
    return True, False


def _pending(stored: Membership | None) -> Change | None:
    return stored.pending if stored is not None and stored.HasField("pending") else None


def _adding(stored: Membership, me: Member) -> bool:
    p = _pending(stored)
    return p is not None and p.kind == Change.ADD and _same(p.member, me)


class MembershipManager:
    """The member list this node sees, and the membership duties of its loop (module docstring)."""

    def __init__(
        self,
        *,
        me: Member,
        claim: Claim,
        kv: KV,
        replicator: _Replicator,
        on_members: Callable[[tuple[Member, ...]], None],
        record: Callable[[Sequence[Member], int, str, Sequence[Member]], None],
        transport: Transport,
        election_timeout_ms: int,
        propose: Callable[[list[commands_pb2.Command]], Awaitable[list[commands_pb2.CommandResult]]],
        leading: Callable[[], bool],
        now_ms: Callable[[], int],
        probe: Callable[[str], Awaitable[cluster_pb2.ClockResponse]] | None = None,
    ) -> None:
        """`probe(grpc_address)`: a node's answer to `Cluster.Clock` from this one (default: over gRPC
        with `transport`, the members' clock-probe credentials)."""
        self.me = me
        self._kv = kv
        self._replicator = replicator
        self._on_members = on_members
        self._record = record
        self._transport = transport
        self._election_timeout_s = election_timeout_ms / 1000
        self._propose = propose
        self._leading = leading
        self._now_ms = now_ms
        self._recorded = tuple(claim.members)  # the list to go by until the store holds one
        self._founders = claim.founders  # None: a joining node learns them from the store
        self._foreign_version = -1
        self._stored: Membership | None = None
        self._state = claim.state
        self._seen_me = claim.state == MEMBER  # this node was (or is being made) a member of a stored list
        self.removed = False
        self.progress = ""  # on the leader: where the change in flight stands
        self._leaderless_since: float | None = None
        self._last_ask = 0.0
        self._last_transfer = 0.0
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._probe = probe or self._clock
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------------------- views

    def stored(self) -> Membership | None:
        """The state machine's list as last read (None before the cluster's first change)."""
        return self._stored

    @property
    def version(self) -> int:
        return self._stored.version if self._stored is not None else 0

    def pending(self) -> Change | None:
        return _pending(self._stored)

    def voters(self) -> tuple[Member, ...]:
        """The voting members (the founding list until the first change)."""
        if self._stored is None:
            return self._recorded
        return tuple(to_member(m) for m in self._stored.members)

    def members(self) -> tuple[Member, ...]:
        """What the node sees as its cluster: the voters, the node being added, and always itself."""
        out = list(self.voters())
        pending = self.pending()
        if pending is not None and pending.kind == Change.ADD:
            out.append(to_member(pending.member))
        if all(m.id != self.me.id for m in out):
            out.append(self.me)
        return tuple(out)

    def role_of(self, node_id: str) -> str:
        """A member's role in cluster status: voter, joining, leaving (or "removed": this node)."""
        if node_id == self.me.id and self.removed:
            return REMOVED
        pending = self.pending()
        if pending is not None and pending.member.node_id == node_id:
            return JOINING_ROLE if pending.kind == Change.ADD else LEAVING
        if node_id == self.me.id and all(m.id != node_id for m in self.voters()):
            return JOINING_ROLE  # a learner before its addition began
        return VOTER

    def base(self) -> list[ClusterMember]:
        """The voters, as a BEGIN carries them (the state machine's current list if it has none yet)."""
        return [to_cluster_member(m) for m in self.voters()]

    def founders(self) -> list[ClusterMember]:
        """The founding members this node's data directory records, as a BEGIN carries them."""
        return [ClusterMember(node_id=i, raft_address=r) for i, r in self._founders or ()]

    def prober_membership(self, node_id: str, raft_address: str) -> str:
        """Whether the node (id, Raft address) is a member as of this node's list: "member", "not_member",
        or "" before the cluster's first change (the founding list is the config's: not ours to judge)."""
        stored = self._stored
        if stored is None or not node_id or not raft_address:  # (the clock monitor's probes name no address)
            return ""
        who = Member(node_id, "", raft_address)
        if any(_same(m, who) for m in stored.members) or _adding(stored, who):
            return "member"
        return "not_member"

    # ------------------------------------------------------------------------------------- the loop

    def start(self) -> None:
        self.refresh()
        self._task = asyncio.create_task(self._run(), name="membership")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()

    async def _run(self) -> None:
        while True:
            try:
                self.refresh()
                if self._leading() and not self.removed:
                    await self.drive()
                else:
                    self.progress = ""
                await self._ask_if_removed()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end membership for the process's lifetime
                log.exception("membership turn failed")
            await asyncio.sleep(INTERVAL_S)

    def refresh(self) -> None:
        """Read the stored list; act on a new version (module docstring)."""
        with self._kv.read() as txn:
            stored = read_membership(txn)
        if stored is None or (self._stored is not None and stored.version == self._stored.version):
            return
        if self._founders is not None and stored.founders and pairs(stored.founders) != list(self._founders):
            # A store restored into another configuration (schedd restore) keeps its cluster's list: not
            # this cluster's. The next change starts from this one's (raft.commands.membership).
            if stored.version != self._foreign_version:
                self._foreign_version = stored.version
                log.warning("the stored member list is another configuration's (a restored store): ignored")
            return
        self._stored = stored
        if self._founders is None:
            self._founders = tuple(pairs(stored.founders))
        me = self.me
        is_voter = any(_same(m, me) for m in stored.members)
        adding = _adding(stored, me)
        self._on_members(self.members())
        self._replicator.set_members(tuple(RaftMember(m.id, m.raft_address) for m in self.members()))
        role = self._replicator.status().role
        if role == "learner" and (adding or is_voter):
            peers = tuple(RaftMember(m.node_id, m.raft_address) for m in stored.members if not _same(m, me))
            log.info("caught up to this node's addition: becoming a voter", change=describe(stored.pending))
            self._replicator.promote(peers)
        if is_voter or adding:
            self._seen_me = True
        state = MEMBER if is_voter else JOINING if adding or role == "learner" else self._state
        if self._seen_me and not is_voter and not adding:
            state = REMOVED
        self._note(state, stored)

    def _note(self, state: str, stored: Membership) -> None:
        founders = [to_member(m) for m in stored.founders]
        self._record(self.voters(), stored.version, state, founders)
        self._state = state
        if state == REMOVED and not self.removed:
            self._leave(f"membership version {stored.version} no longer lists it")

    def _leave(self, why: str) -> None:
        self.removed = True
        self._replicator.leave()
        log.warning(
            "this node was removed from the cluster: it no longer takes part in Raft; stop it (its data "
            "directory is refused from now on: to add this machine again, join with an empty one)",
            node=self.me.id,
            why=why,
        )

    # ------------------------------------------------------------------------------------- the leader

    async def drive(self) -> None:
        """One step of the change in flight, on the leader (module docstring)."""
        pending = self.pending()
        if pending is None:
            self.progress = ""
            return
        m = pending.member
        target = RaftMember(m.node_id, m.raft_address)
        in_config = m.raft_address in self._replicator.voters()
        if pending.kind == Change.ADD and not in_config:
            ready, why = await self._caught_up(m, pending.began_index)
            if not ready:
                self.progress = why
                return
            if not await self._change(target, add=True):
                return
        elif pending.kind == Change.REMOVE and in_config:
            if m.node_id == self.me.id:
                self.progress = (
                    f"{m.node_id} is to be removed and leads: handing leadership to another member"
                )
                if time.monotonic() - self._last_transfer >= _TRANSFER_EVERY_S:
                    self._last_transfer = time.monotonic()
                    await self._replicator.transfer_leadership(None)
                return
            if not await self._change(target, add=False):
                return
        await self._finish(pending)

    async def _change(self, target: RaftMember, *, add: bool) -> bool:
        what = "adding" if add else "removing"
        self.progress = f"{what} {target.node_id} ({target.raft_address}) in the Raft configuration"
        try:
            await self._replicator.change_voters(target, add=add, timeout_s=_CHANGE_TIMEOUT_S)
        except CronraftError as e:
            # Refused (this term's first entry not applied yet) or not known to have committed: the next
            # turn reads the configuration again and tries again or goes on.
            self.progress = f"{self.progress}: {e}; trying again"
            log.info("membership change not done yet", change=what, node=target.node_id, problem=str(e))
            return False
        log.info("Raft configuration changed", change=what, node=target.node_id)
        return True

    async def _finish(self, pending: Change) -> None:
        self.progress = f"recording the end of {describe(pending)}"
        cmd = commands_pb2.Command(
            request_id=f"membership-finish:{pending.began_index}",
            stamped_at_ms=self._now_ms(),
        )
        cmd.change_membership.step = membership_pb2.ChangeMembership.FINISH
        cmd.change_membership.change.CopyFrom(pending)
        (res,) = await self._propose([cmd])
        if res.error_code:
            log.info("membership finish not applied", problem=res.error)
        else:
            log.info("membership change done", change=describe(pending))
        self.progress = ""
        self.refresh()

    async def _caught_up(self, m: ClusterMember, began_index: int) -> tuple[bool, str]:
        """Whether the joining node answers as a voter that applied the entry that began its addition."""
        try:
            resp = await self._probe(m.grpc_address)
        except (grpc.RpcError, OSError) as e:
            code = e.code().name if isinstance(e, grpc.aio.AioRpcError) else type(e).__name__
            return False, (
                f"waiting for {m.node_id} to answer at {m.grpc_address} ({code}): start it with "
                "`schedd --join` and an empty data directory"
            )
        if resp.node_id != m.node_id:
            return False, f"the node at {m.grpc_address} is {resp.node_id!r}, not {m.node_id}"
        if resp.role == "learner":
            # A learner hears only from a leader it is connected to: the members its config lists.
            hint = (
                ""
                if resp.applied_index
                else " (its config must list the current members, the leader among them)"
            )
            why = f"waiting for {m.node_id} to catch up: applied {resp.applied_index} of {began_index}{hint}"
            return False, why
        if resp.role == "removed" or resp.applied_index < began_index:
            # A voter promoted from learner has applied the entry that began its addition: this one was
            # started without --join (or with another data directory).
            return False, (
                f"{m.node_id} answers as {resp.role or 'a voter'} that has not applied its addition "
                f"(applied {resp.applied_index} of {began_index}): stop it, empty its data directory and "
                "start it with `schedd --join`"
            )
        return True, ""

    async def _clock(self, address: str) -> cluster_pb2.ClockResponse:
        ch = self._channels.get(address)
        if ch is None:
            ch = self._channels[address] = self._transport.aio_channel(address)
        stub = cluster_pb2_grpc.ClusterStub(ch)
        resp: cluster_pb2.ClockResponse = await stub.Clock(
            cluster_pb2.ClockRequest(node_id=self.me.id, raft_address=self.me.raft_address),
            timeout=_PROBE_TIMEOUT_S,
        )
        return resp

    # ------------------------------------------------------------------------------------- removed?

    async def _ask_if_removed(self) -> None:
        """A voter that has heard no leader for a while asks the members whether it is still one. Naming a
        leader is not hearing from it: a removed node can keep the id of the last leader it knew (a
        candidate whose pre-votes fail stays a follower), so only a leader it is connected to counts."""
        st = self._replicator.status()
        led = st.leader_id is not None and st.connected.get(st.leader_id, False)
        if self.removed or st.role != "voter" or led:
            self._leaderless_since = None
            return
        now = time.monotonic()
        if self._leaderless_since is None:
            self._leaderless_since = now
        if now - self._leaderless_since < LEADERLESS_TIMEOUTS * self._election_timeout_s:
            return
        if now - self._last_ask < _ASK_EVERY_S:
            return
        self._last_ask = now
        peers = [m for m in self.members() if m.id != self.me.id]
        answers = await asyncio.gather(*(self._probe(m.grpc_address) for m in peers), return_exceptions=True)
        for peer, resp in zip(peers, answers, strict=True):
            if (
                isinstance(resp, cluster_pb2.ClockResponse)
                and resp.prober_membership == "not_member"
                and resp.membership_version > self.version
            ):
                self._record(self.voters(), self.version, REMOVED, ())
                self._state = REMOVED
                self._leave(f"{peer.id} says so as of membership version {resp.membership_version}")
                return


__all__ = [
    "INTERVAL_S",
    "JOINING_ROLE",
    "LEAVING",
    "VOTER",
    "MembershipManager",
    "initial_role",
    "to_cluster_member",
    "to_member",
]
