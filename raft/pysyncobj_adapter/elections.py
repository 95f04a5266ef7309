"""Elections on pysyncobj: pre-vote (raft.append_flow `PreVote` decides; this wires it), keepalives on
every connection (the lost first vote, issue 16), and the fast failover when the connection to the leader
closes. A mixin of `RaftNode` (raft.pysyncobj_adapter.node), which holds the state it uses."""

from __future__ import annotations

import logging
from typing import Any

from pysyncobj import SyncObj
from pysyncobj.monotonic import monotonic as raft_monotonic
from pysyncobj.syncobj import _RAFT_STATE

from cronraft.raft.append_flow import PreVote, grants_pre_vote

log = logging.getLogger("cronraft.raft.pysyncobj_adapter")

# Every connection carries a message at least this often. pysyncobj closes a connection that has read
# nothing for `connectionTimeout` as soon as it next sends or reads on it: the link between two
# followers is idle between elections, so the first vote request after a leader's death closed it
# unread (issue 16, "the lost first vote") and the election waited for a second timeout.
KEEPALIVE_S = 1.0


class Elections(SyncObj):  # type: ignore[misc]
    """Pre-vote, keepalives, fast failover (module docstring); `RaftNode` sets the state first."""

    _host: Any
    _pre_vote: PreVote
    _pre_vote_promise: tuple[int, str | None, float]
    _stand_now: bool
    _leader_heard_at: float
    _next_keepalive: float
    _pysyncobj_on_disconnected: Any

    def _on_node_disconnected(self, node: Any) -> None:
        """The connection to the leader closed (runs on the Raft thread). A killed leader's kernel closes
        its sockets at once, yet followers would wait a whole election timeout (1-2 s) of missing
        heartbeats. Bring the election forward to a short random delay instead: if the leader is alive,
        pysyncobj reconnects and the next heartbeat pushes the deadline back (every append_entries
        does), so only a leader that stays unreachable for that long is replaced. A partition that
        closes nothing still waits the normal timeout. Raft's safety does not depend on timing."""
        if self._pysyncobj_on_disconnected is not None:
            self._pysyncobj_on_disconnected(node)
        if node is None or node != self._getLeader() or self._isLeader():
            return
        delay = self._host.fast_election_delay()
        deadline = raft_monotonic() + delay
        current: float = getattr(self, "_SyncObj__raftElectionDeadline")  # noqa: B009 (name-mangled)
        if deadline < current:
            self._SyncObj__raftElectionDeadline = deadline
            log.info("connection to the leader %s closed: election in %.2f s unless it returns", node, delay)

    def _onTick(self, timeToWait: float = 0.0) -> None:
        self._guard_election()
        super()._onTick(timeToWait)

    def _guard_election(self) -> None:
        """Runs before pysyncobj's tick, which stands once the election deadline passed: hold that with a
        pre-vote round first, unless a round was just won or the leader asked (TimeoutNow)."""
        if self._stand_now:  # a round was won: pysyncobj stands in this tick (its deadline is 0)
            self._stand_now = False
            return
        if self.selfNode is None:
            return
        if self._SyncObj__raftState == _RAFT_STATE.LEADER:
            self._pre_vote.stop()
            return
        now = raft_monotonic()
        if self._SyncObj__raftElectionDeadline >= now or not self._SyncObj__connectedToAnyone():
            return
        others = self._SyncObj__otherNodes
        if not others or self._SyncObj__transferInProgress:
            return
        voters = len(others) + 1
        connected = [n.id for n in others if n in self._SyncObj__connectedNodes]
        round_ = self._pre_vote
        if round_.won_at_end(voters, connected):
            log.info("pre-vote for term %s: members that never answered one presumed to grant", round_.term)
            round_.stop()
            return  # pysyncobj stands in this tick
        term = self._SyncObj__raftCurrentTerm + 1
        log.info("no leader heard: pre-vote for term %d", term)
        round_.start(term)
        self._SyncObj__raftElectionDeadline = now + self._SyncObj__generateRaftTimeout()
        ask = {
            "type": "cr_pre_vote",
            "term": term,
            "last_log_index": self._SyncObj__getCurrentLogIndex(),
            "last_log_term": self._SyncObj__getCurrentLogTerm(),
        }
        transport = self._SyncObj__transport
        for node in others:
            transport.send(node, ask)

    def _hears_leader(self) -> bool:
        """A leader was heard within the shortest election timeout over a connection still open (a killed
        leader's connections close at once: then the fast failover needs no timeout)."""
        if self._isLeader():
            return True
        leader = self._getLeader()
        return (
            leader is not None
            and leader in self._SyncObj__connectedNodes
            and raft_monotonic() - self._leader_heard_at < self.conf.raftMinTimeout
        )

    def _on_pre_vote(self, node: Any, message: dict[str, Any]) -> None:
        if self.selfNode is None:
            return
        now = raft_monotonic()
        term = message["term"]
        promise_term, promised_to, promise_until = self._pre_vote_promise
        granted = not self._stand_now and grants_pre_vote(
            candidate=node.id,
            candidate_term=term,
            candidate_last=(message["last_log_term"], message["last_log_index"]),
            own_id=self.selfNode.id,
            own_term=self._SyncObj__raftCurrentTerm,
            own_vote=self._SyncObj__votedForNodeId,
            own_last=(self._SyncObj__getCurrentLogTerm(), self._SyncObj__getCurrentLogIndex()),
            hears_leader=self._hears_leader(),
            own_round=self._pre_vote.term,
            promised_to=promised_to if promise_term == term and now < promise_until else None,
        )
        if granted:
            # As Raft resets its election timer when it grants a vote: give that candidate the time to
            # stand before this node stands too. The two followers of a killed leader stand within a few
            # ms of each other (the fast failover): both winning their pre-votes split the real vote
            # (each voting for itself), and the next election waited a whole timeout (1-2 s).
            self._pre_vote_promise = (term, node.id, now + self.conf.raftMinTimeout)
            postponed = now + self._SyncObj__generateRaftTimeout() / 4
            if self._pre_vote.term is not None:
                self._pre_vote.stop()
                self._SyncObj__raftElectionDeadline = postponed
            else:
                self._SyncObj__raftElectionDeadline = max(self._SyncObj__raftElectionDeadline, postponed)
        log.debug("pre-vote for %s in term %d: %s", node.id, term, granted)
        self._SyncObj__transport.send(node, {"type": "cr_pre_vote_answer", "term": term, "granted": granted})

    def _on_pre_vote_answer(self, node: Any, message: dict[str, Any]) -> None:
        round_ = self._pre_vote
        round_.answer(node.id, message["term"], bool(message["granted"]))
        if round_.won(len(self._SyncObj__otherNodes) + 1):
            log.info("pre-vote for term %s won: standing", round_.term)
            round_.stop()
            if self._SyncObj__raftState != _RAFT_STATE.LEADER:
                self._stand_now = True
                self._SyncObj__raftElectionDeadline = 0

    def _keep_alive(self) -> None:
        """A tick callback: a message on every connection at least every KEEPALIVE_S (see there)."""
        now = raft_monotonic()
        if now < self._next_keepalive:
            return
        self._next_keepalive = now + KEEPALIVE_S
        transport = self._SyncObj__transport
        for node in list(self._SyncObj__connectedNodes):
            transport.send(node, {"type": "cr_ping"})


__all__ = ["KEEPALIVE_S", "Elections"]
