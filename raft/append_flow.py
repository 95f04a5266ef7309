"""The log's flow to a follower, and the election guard, as pure decisions (no pysyncobj, no clock).

raft.pysyncobj_adapter wires these into pysyncobj, whose own versions failed over a long round trip
(docs/multi-region.md, S18/S19):

- **The leader's pacing of one follower** (`PeerFlow`, `batch_size`, `FlowLimits`). pysyncobj sends a
  follower everything it lacks at once, in messages of up to `appendEntriesBatchSizeBytes`: over a
  link carrying a few hundred KiB a second the heartbeats then waited behind megabytes, the follower
  stood for election, and the leader was deposed. Here a message holds whole entries within a byte and
  an entry bound, and at most a window of them is unacknowledged, so a heartbeat never queues behind
  more than a window's worth of bytes; the window slides as acknowledgements come back (pipelining).
- **Stale answers** (`PeerFlow.counts_ack`, `counts_reject`). Every append carries the leader's epoch for
  that follower, and the follower echoes it. A refusal moves the next index back only if it answers an
  append of the current epoch: the refusals of the appends that were already in flight when the first
  one came back (one per message) would otherwise each move it back again to the same old index, the
  leader sending everything from there again and again (S19: "resends from one old index"). Each move
  back starts a new epoch. An acknowledgement counts if it answers an append of this leadership.
- **A follower's answer to an append** (`plan_append`). Raft's rule (Ongaro and Ousterhout, "In Search
  of an Understandable Consensus Algorithm", figure 2): delete the log from the first entry that
  conflicts with the leader's, never entries that match, and commit at most the message's last entry.
  pysyncobj deleted everything after the message's first position whenever the log went further (an
  append sent twice truncated applied entries: "truncating already-applied log entries"), and answered
  a conflict with one index back per round trip. Here a conflict answers with where the conflicting
  term began (not below the follower's commit index, which matches every leader's log), and a missing
  position with the follower's last index.
- **Pre-vote** (`grants_pre_vote`, `PreVote`; Ongaro's thesis, section 9.6). A node stands (increments
  its term) only after a majority said it would vote for it: a node that hears a leader refuses, so a
  minority cut off and healed (S18: terms 21 to 98 in 100 s) no longer deposes a working leader. A
  node that grants a pre-vote promises it to that candidate for the term and postpones its own
  election, and of two nodes asking at once the higher id yields: the followers of a killed leader ask
  within a few ms of each other, and both winning split the real vote (issue 16).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FlowLimits:
    """Bounds of the log's flow to one follower, in entries and in their payload bytes.

    `window_bytes` is what a heartbeat may wait behind on the connection: over a link carrying B bytes a
    second, it is late by at most window_bytes / B. A message and the window always take one whole
    entry, however large (an entry is never split: pysyncobj's split transmission lost chunks)."""

    message_bytes: int = 256 << 10
    message_entries: int = 128
    window_bytes: int = 1 << 20
    window_entries: int = 1024

    def __post_init__(self) -> None:
        if min(self.message_bytes, self.message_entries, self.window_bytes, self.window_entries) < 1:
            raise ValueError("flow limits must be positive")


def batch_size(sizes: Sequence[int], limits: FlowLimits, *, flight_bytes: int, flight_entries: int) -> int:
    """How many of the entries whose payload sizes are `sizes` (the next ones in log order) go in the
    next message, with `flight_bytes`/`flight_entries` already unacknowledged: whole entries within the
    message's and the window's bounds; one entry at least when nothing is in flight."""
    room_entries = min(limits.message_entries, limits.window_entries - flight_entries)
    room_bytes = min(limits.message_bytes, limits.window_bytes - flight_bytes)
    count = 0
    total = 0
    for size in sizes[: max(0, room_entries)]:
        if count and total + size > room_bytes:
            break
        if not count and size > room_bytes and flight_entries:
            break  # a large entry waits for an empty window rather than overfill it
        total += size
        count += 1
    return count


class PeerFlow:
    """The leader's state of the flow to one follower beyond pysyncobj's next and match indexes: the
    unacknowledged messages (their last index and payload bytes) and the epochs.

    `next_epoch` gives node-wide increasing numbers, so that no epoch is reused across leaderships."""

    __slots__ = (
        "_flight",
        "_next_epoch",
        "epoch",
        "first_epoch",
        "flight_bytes",
        "flight_entries",
        "sent_at",
        "term",
    )

    def __init__(self, next_epoch: Callable[[], int], term: int) -> None:
        self._next_epoch = next_epoch
        self._flight: deque[tuple[int, int, int]] = deque()  # (last index, entries, payload bytes)
        self.flight_bytes = 0
        self.flight_entries = 0
        self.term = term
        self.sent_at = float("-inf")  # when the leader last sent this follower anything (its clock)
        self.epoch = self.first_epoch = next_epoch()

    def sent(self, last_index: int, entries: int, payload_bytes: int) -> None:
        self._flight.append((last_index, entries, payload_bytes))
        self.flight_entries += entries
        self.flight_bytes += payload_bytes

    def acked(self, index: int) -> None:
        """The follower holds the log up to `index`: the messages up to it are no longer in flight."""
        flight = self._flight
        while flight and flight[0][0] <= index:
            _, entries, payload_bytes = flight.popleft()
            self.flight_entries -= entries
            self.flight_bytes -= payload_bytes

    def dropped(self) -> None:
        """The connection closed: what was in flight is lost (the follower's next refusal says where to
        resume)."""
        self._flight.clear()
        self.flight_bytes = 0
        self.flight_entries = 0

    def rewind(self) -> None:
        """The next index moved back: a new epoch, so that the refusals still on their way are ignored."""
        self.dropped()
        self.epoch = self._next_epoch()

    def counts_ack(self, epoch: int | None) -> bool:
        """An acknowledgement counts if it answers an append of this leadership (None: an older release,
        which echoes no epoch: counted, as pysyncobj does)."""
        return epoch is None or epoch >= self.first_epoch

    def counts_reject(self, epoch: int | None) -> bool:
        """A refusal moves the next index back only if it answers an append of the current epoch."""
        return epoch is None or epoch == self.epoch


@dataclass(frozen=True)
class AppendPlan:
    """A follower's decision on one append.

    accepted: its position matched. `next_index`: the answer (accepted: the index after the message's
    last entry; refused: where the leader should resume). `truncate_from`: the first log index to delete
    (the first conflicting entry), or None. `first_new`: the position in the message's entries of the
    first one to add. `last_new`: the message's last index (its position if it has no entry), the
    highest index the message proves to match the leader's log: the follower commits no further."""

    accepted: bool
    next_index: int
    truncate_from: int | None = None
    first_new: int = 0
    last_new: int = 0


def plan_append(
    *,
    log_first: int,
    log_last: int,
    term_at: Callable[[int], int],
    prev_index: int,
    prev_term: int,
    entries: Sequence[tuple[int, int]],
    commit_index: int,
) -> AppendPlan:
    """Raft's append rule for a log holding indexes `log_first`..`log_last` (`term_at(i)` the term of
    entry i in that range), given the leader's position (`prev_index`, `prev_term`) and the message's
    entries as (index, term), consecutive from prev_index + 1."""
    if prev_index > log_last or prev_index < log_first:
        # A gap (entries lost in flight, or never sent): resume after our last entry. Below our first
        # entry (compacted here): our last entry is as good a place as any to resume from.
        return AppendPlan(accepted=False, next_index=log_last + 1)
    conflict_term = term_at(prev_index)
    if conflict_term != prev_term:
        # Resume where our run of the conflicting term began: the leader holds none of it at these
        # indexes (Raft's log matching), or it would have matched. Never below what we committed, which
        # every leader's log holds; at least one entry of ours stays as the position to resume after.
        start = prev_index
        floor = max(commit_index + 1, log_first + 1)
        while start > floor and term_at(start - 1) == conflict_term:
            start -= 1
        return AppendPlan(accepted=False, next_index=max(min(start, prev_index), log_first + 1))
    truncate_from: int | None = None
    first_new = len(entries)
    for position, (index, term) in enumerate(entries):
        if index != prev_index + 1 + position:
            raise ValueError(f"append entries are not consecutive from {prev_index + 1}: {index}")
        if index > log_last:
            first_new = position
            break
        if term_at(index) != term:
            truncate_from = index
            first_new = position
            break
    last_new = entries[-1][0] if entries else prev_index
    return AppendPlan(
        accepted=True,
        next_index=last_new + 1,
        truncate_from=truncate_from,
        first_new=first_new,
        last_new=last_new,
    )


def grants_pre_vote(
    *,
    candidate: str,
    candidate_term: int,
    candidate_last: tuple[int, int],
    own_id: str,
    own_term: int,
    own_vote: str | None,
    own_last: tuple[int, int],
    hears_leader: bool,
    own_round: int | None = None,
    promised_to: str | None = None,
) -> bool:
    """Would this node vote for `candidate` standing at `candidate_term` whose log ends at
    `candidate_last` (term, index)? Not while it hears a leader, not in a term it has passed or in which
    it voted for another (itself included: it stands), not for a log behind its own (Raft's up-to-date
    rule). And, so that two nodes asking at once do not both stand and split the real vote: not if it
    promised this term's pre-vote to another (`promised_to`), and not to a higher id with the same log
    while its own round for the same term (`own_round`) is open (the lower id goes first)."""
    if hears_leader or candidate_term < own_term:
        return False
    if candidate_term == own_term and own_vote not in (None, candidate):
        return False
    if promised_to not in (None, candidate):
        return False
    if candidate_last < own_last:
        return False
    # The lower id goes first only between equals: a candidate whose log is ahead of ours is granted even
    # while our own round is open, since we cannot win against it (it refuses us by the rule above). When
    # the higher id held the longest log, every node's round blocked the only electable candidate, round
    # after round: no leader for ~3 minutes after a whole-cluster restart (fault scenario S14, seed 2).
    return not (own_round == candidate_term and candidate > own_id and candidate_last == own_last)


class PreVote:
    """A candidate's pre-vote rounds. A round asks every voter for `term` (the term it would stand at);
    it is won once a majority (itself included) granted. Voters of an older release answer nothing:
    one that never answered a pre-vote and did not answer this round (while connected) is presumed to
    grant when the round ends, so that an upgrade in progress still elects; a refusal never counts."""

    def __init__(self) -> None:
        self.term: int | None = None
        self.granted: set[str] = set()
        self.answered: set[str] = set()
        self.speakers: set[str] = set()  # voters that ever answered a pre-vote: this release or later

    def heard_from(self, voter: str) -> None:
        """`voter` sent a message only this release (or a later one) sends (a keepalive): it speaks
        pre-vote, so its silence is never presumed a grant."""
        self.speakers.add(voter)

    def start(self, term: int) -> None:
        self.term = term
        self.granted = set()
        self.answered = set()

    def answer(self, voter: str, term: int, granted: bool) -> None:
        self.speakers.add(voter)
        if term != self.term:
            return  # an answer to an earlier round
        self.answered.add(voter)
        if granted:
            self.granted.add(voter)

    def won(self, voters: int) -> bool:
        """`voters`: the configuration's size, this node included."""
        return self.term is not None and len(self.granted) + 1 > voters / 2

    def won_at_end(self, voters: int, connected: Sequence[str]) -> bool:
        """At the round's end: won, counting connected voters that never answered any pre-vote."""
        if self.term is None:
            return False
        silent = {v for v in connected if v not in self.speakers and v not in self.answered}
        return len(self.granted | silent) + 1 > voters / 2

    def stop(self) -> None:
        self.term = None
        self.granted = set()
        self.answered = set()


__all__ = [
    "AppendPlan",
    "FlowLimits",
    "PeerFlow",
    "PreVote",
    "batch_size",
    "grants_pre_vote",
    "plan_append",
]
