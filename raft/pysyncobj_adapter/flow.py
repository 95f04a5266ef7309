"""The log's flow between leader and followers, on pysyncobj (raft.append_flow decides; this wires it): the
leader's appends and heartbeats (`_SyncObj__sendAppendEntries`, replacing pysyncobj's), its handling of
a follower's answer, and a follower's handling of an append. A mixin of `RaftNode`
(raft.pysyncobj_adapter.node), which holds the state it uses (`_flows`, `_epochs`)."""

from __future__ import annotations

import itertools
import logging
from typing import Any

from pysyncobj import SyncObj
from pysyncobj.monotonic import monotonic as raft_monotonic

from cronraft.raft.append_flow import FlowLimits, PeerFlow, batch_size, plan_append

log = logging.getLogger("cronraft.raft.pysyncobj_adapter")

# The log's flow to each follower (raft.append_flow): a message carries at most 256 KiB of entries (or one
# larger entry) and at most 1 MiB is unacknowledged, so a heartbeat waits behind at most that much on a
# slow link (docs/multi-region.md: 30-80 ms one way).
FLOW_LIMITS = FlowLimits()


class LogFlow(SyncObj):  # type: ignore[misc]
    """The log's flow (module docstring); `RaftNode` sets `_flows` and `_epochs` before SyncObj starts."""

    _flows: dict[Any, PeerFlow]
    _epochs: itertools.count[int]
    _holding_appends: bool
    _appends_held: bool

    def _term_at(self, index: int) -> int:
        log_ = self._SyncObj__raftLog
        return int(log_[index - log_[0][1]][2])

    def _on_append(self, node: Any, message: dict[str, Any]) -> None:
        """A follower's (or learner's) handling of an append of the current term or a later one
        (raft.append_flow `plan_append`): never deletes entries that match the leader's, answers a
        conflict with where the conflicting term began, and echoes the leader's epoch."""
        log_ = self._SyncObj__raftLog
        entries = message.get("entries") or []
        commit = self._SyncObj__raftCommitIndex
        # pysyncobj's bookkeeping of an append (term, leader, state, election deadline), without the log
        # part and with the commit index unchanged: the log is ours below.
        SyncObj._SyncObj__onMessageReceived(
            self, node, {"type": "append_entries", "term": message["term"], "commit_index": commit}
        )
        plan = plan_append(
            log_first=log_[0][1],
            log_last=log_[-1][1],
            term_at=self._term_at,
            prev_index=message["prevLogIdx"],
            prev_term=message["prevLogTerm"],
            entries=[(entry[1], entry[2]) for entry in entries],
            commit_index=commit,
        )
        if plan.accepted:
            membership = self.conf.dynamicMembershipChange
            if plan.truncate_from is not None:
                if plan.truncate_from <= self.raftLastApplied:
                    log.critical(
                        "the leader's log conflicts with applied entries from index %d (last applied %d)",
                        plan.truncate_from,
                        self.raftLastApplied,
                    )
                if membership:  # undo the configuration changes of the deleted entries, newest first
                    for entry in reversed(self._SyncObj__getEntries(plan.truncate_from)):
                        change = self._SyncObj__parseChangeClusterRequest(entry[0])
                        if change is not None:
                            self._SyncObj__doChangeCluster(change, reverse=True)
                self._SyncObj__deleteEntriesFrom(plan.truncate_from)
            added = entries[plan.first_new :]
            for entry in added:
                log_.add(*entry)
            if membership:
                for entry in added:
                    change = self._SyncObj__parseChangeClusterRequest(entry[0])
                    if change is not None:
                        self._SyncObj__doChangeCluster(change)
            last = log_[-1][1]
            commit = min(self._SyncObj__raftCommitIndex, last)
            commit = max(commit, min(message["commit_index"], plan.last_new, last))
            if commit != self._SyncObj__raftCommitIndex:
                setattr(self, "_SyncObj__raftCommitIndex", commit)  # noqa: B010 (name-mangled)
                log_.setRaftCommitIndex(commit)
        self._SyncObj__leaderCommitIndex = message["commit_index"]
        answer = {
            "type": "next_node_idx",
            "next_node_idx": plan.next_index,
            "reset": not plan.accepted,
            "success": plan.accepted,
        }
        if "cr_epoch" in message:
            answer["cr_epoch"] = message["cr_epoch"]
        self._SyncObj__transport.send(node, answer)

    def _flow(self, node: Any) -> PeerFlow:
        term = self._SyncObj__raftCurrentTerm
        flow = self._flows.get(node)
        if flow is None or flow.term != term:
            flow = self._flows[node] = PeerFlow(self._epochs.__next__, term)
        return flow

    def _on_follower_answer(self, node: Any, message: dict[str, Any]) -> None:
        """The leader's handling of a follower's answer (replaces pysyncobj's): an acknowledgement moves
        the match and next indexes forward only; a refusal moves the next index back only if it answers
        an append of the current epoch (raft.append_flow `PeerFlow`)."""
        self._SyncObj__lastResponseTime[node] = raft_monotonic()
        flow = self._flow(node)
        epoch = message.get("cr_epoch")
        next_index = message["next_node_idx"]
        if message["success"]:
            if not flow.counts_ack(epoch):
                return
            matched = self._SyncObj__raftMatchIndex
            if matched.get(node, 0) < next_index - 1:
                matched[node] = next_index - 1
            nexts = self._SyncObj__raftNextIndex
            if nexts.get(node, 0) < next_index:
                nexts[node] = next_index
            flow.acked(next_index - 1)
        elif message["reset"] and flow.counts_reject(epoch):
            self._SyncObj__raftNextIndex[node] = next_index
            flow.rewind()

    def _SyncObj__sendAppendEntries(self) -> None:
        """The leader's appends and heartbeats to every connected follower (replaces pysyncobj's, which sent
        all a follower lacks at once): whole entries in messages bounded by `FLOW_LIMITS`, at most a
        window of them unacknowledged, one message at least (a heartbeat) per call, the epoch attached.
        A follower behind the log's start gets the snapshot, as pysyncobj sends it."""
        if self._holding_appends:
            self._appends_held = True
            return
        conf = self.conf
        started = raft_monotonic()
        self._SyncObj__newAppendEntriesTime = started + conf.appendEntriesPeriod
        log_ = self._SyncObj__raftLog
        transport = self._SyncObj__transport
        connected = self._SyncObj__connectedNodes
        nexts = self._SyncObj__raftNextIndex
        for node in self._SyncObj__otherNodes | self._SyncObj__readonlyNodes:
            flow = self._flow(node)
            if node not in connected:
                self._SyncObj__serializer.cancelTransmisstion(node)
                flow.dropped()
                continue
            if nexts[node] <= log_[0][1]:
                self._send_snapshot(node, started)
                continue
            sent = False
            while node in connected:
                next_index = min(nexts[node], log_[-1][1] + 1)
                entries = self._SyncObj__getEntries(next_index, FLOW_LIMITS.message_entries)
                sizes = [len(entry[0]) for entry in entries]
                count = batch_size(
                    sizes, FLOW_LIMITS, flight_bytes=flow.flight_bytes, flight_entries=flow.flight_entries
                )
                if count == 0 and (sent or started - flow.sent_at < conf.appendEntriesPeriod):
                    # Nothing new, or no room: a heartbeat only if nothing went out for a heartbeat
                    # period. pysyncobj sent one on every call (each tick that applied entries), which
                    # doubled the traffic of a slow link that was already the bottleneck (S20: the
                    # link to region C carried ~30 KB/s and its queue held 20 s of messages).
                    break
                batch = entries[:count]
                message = {
                    "type": "append_entries",
                    "term": self._SyncObj__raftCurrentTerm,
                    "commit_index": self._SyncObj__raftCommitIndex,
                    "entries": batch,
                    "prevLogIdx": next_index - 1,
                    "prevLogTerm": self._term_at(next_index - 1),
                    "cr_epoch": flow.epoch,
                }
                transport.send(node, message)
                sent = True
                flow.sent_at = started
                if batch:
                    nexts[node] = batch[-1][1] + 1
                    flow.sent(batch[-1][1], count, sum(sizes[:count]))
                if not batch or raft_monotonic() - started > conf.appendEntriesPeriod:
                    break

    def _send_snapshot(self, node: Any, started: float) -> None:
        """pysyncobj's snapshot transmission to a follower behind the log's start (its own code's logic)."""
        serializer = self._SyncObj__serializer
        transport = self._SyncObj__transport
        connected = self._SyncObj__connectedNodes
        while node in connected:
            data = serializer.getTransmissionData(node)
            message = {
                "type": "append_entries",
                "term": self._SyncObj__raftCurrentTerm,
                "commit_index": self._SyncObj__raftCommitIndex,
                "serialized": data,
            }
            transport.send(node, message)
            if data is None or node not in connected:
                return
            if data[2]:  # the last chunk
                self._SyncObj__raftNextIndex[node] = self._SyncObj__raftLog[1][1] + 1
                return
            if raft_monotonic() - started > self.conf.appendEntriesPeriod:
                return


__all__ = ["FLOW_LIMITS", "LogFlow"]
