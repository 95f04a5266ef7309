"""raft.append_flow: the leader's pacing of a follower, a follower's answer to an append, pre-vote (the
pure decisions behind raft.pysyncobj_adapter's handling of S18/S19, docs/multi-region.md)."""

from __future__ import annotations

import itertools

import pytest

from cronraft.raft.append_flow import (
    FlowLimits,
    PeerFlow,
    PreVote,
    batch_size,
    grants_pre_vote,
    plan_append,
)

LIMITS = FlowLimits(message_bytes=100, message_entries=4, window_bytes=250, window_entries=10)


def test_a_message_takes_whole_entries_within_its_bounds() -> None:
    assert batch_size([10] * 9, LIMITS, flight_bytes=0, flight_entries=0) == 4  # entry bound
    assert batch_size([40, 40, 40], LIMITS, flight_bytes=0, flight_entries=0) == 2  # byte bound
    assert batch_size([], LIMITS, flight_bytes=0, flight_entries=0) == 0


def test_the_window_bounds_what_is_unacknowledged() -> None:
    assert batch_size([40, 40], LIMITS, flight_bytes=200, flight_entries=5) == 1  # 50 bytes of room
    assert batch_size([40], LIMITS, flight_bytes=240, flight_entries=5) == 0
    assert batch_size([10] * 4, LIMITS, flight_bytes=0, flight_entries=9) == 1  # one entry of room


def test_an_entry_larger_than_a_message_goes_alone_once_the_window_is_empty() -> None:
    assert batch_size([1000, 10], LIMITS, flight_bytes=0, flight_entries=0) == 1
    assert batch_size([1000], LIMITS, flight_bytes=10, flight_entries=1) == 0


def _flow() -> PeerFlow:
    return PeerFlow(itertools.count(1).__next__, term=3)


def test_acknowledgements_slide_the_window() -> None:
    flow = _flow()
    flow.sent(10, 4, 100)
    flow.sent(14, 4, 80)
    assert (flow.flight_entries, flow.flight_bytes) == (8, 180)
    flow.acked(9)  # an earlier message's answer: nothing of these is acknowledged yet
    assert flow.flight_entries == 8
    flow.acked(10)
    assert (flow.flight_entries, flow.flight_bytes) == (4, 80)
    flow.acked(20)
    assert (flow.flight_entries, flow.flight_bytes) == (0, 0)


def test_only_a_refusal_of_the_current_epoch_moves_the_next_index_back() -> None:
    flow = _flow()
    first = flow.epoch
    flow.sent(10, 4, 100)
    assert flow.counts_reject(first)
    flow.rewind()  # the first refusal: resend from where the follower said
    assert flow.flight_entries == 0
    # The refusals of the messages that were in flight with it answer the old epoch: ignored.
    assert not flow.counts_reject(first)
    assert flow.counts_reject(flow.epoch)
    # Acknowledgements of this leadership count whatever their epoch; an older release echoes none.
    assert flow.counts_ack(first)
    assert flow.counts_ack(None) and flow.counts_reject(None)


def test_epochs_are_not_reused_across_leaderships() -> None:
    epochs = itertools.count(1)
    old = PeerFlow(epochs.__next__, term=3)
    new = PeerFlow(epochs.__next__, term=5)
    assert not new.counts_ack(old.epoch)
    assert not new.counts_reject(old.epoch)


def _log(terms: dict[int, int]) -> dict[str, object]:
    return {"log_first": min(terms), "log_last": max(terms), "term_at": terms.__getitem__}


def test_entries_the_follower_already_holds_are_skipped_not_truncated() -> None:
    # The log holds 1..10 (term 2); an append sent again re-covers 4..6: nothing deleted, nothing added,
    # and the answer stops at the message's end (the follower commits no further than that).
    plan = plan_append(
        **_log(dict.fromkeys(range(1, 11), 2)),  # type: ignore[arg-type]
        prev_index=3,
        prev_term=2,
        entries=[(4, 2), (5, 2), (6, 2)],
        commit_index=8,
    )
    assert plan.accepted and plan.truncate_from is None
    assert plan.first_new == 3 and plan.last_new == 6 and plan.next_index == 7


def test_a_conflicting_entry_truncates_from_there_only() -> None:
    terms = {**dict.fromkeys(range(1, 6), 2), **dict.fromkeys(range(6, 9), 3)}
    plan = plan_append(
        **_log(terms),  # type: ignore[arg-type]
        prev_index=4,
        prev_term=2,
        entries=[(5, 2), (6, 4), (7, 4)],
        commit_index=4,
    )
    assert plan.accepted and plan.truncate_from == 6 and plan.first_new == 1 and plan.next_index == 8


def test_new_entries_past_the_log_are_appended() -> None:
    plan = plan_append(
        **_log(dict.fromkeys(range(1, 6), 2)),  # type: ignore[arg-type]
        prev_index=4,
        prev_term=2,
        entries=[(5, 2), (6, 2)],
        commit_index=4,
    )
    assert plan.accepted and plan.truncate_from is None and plan.first_new == 1 and plan.next_index == 7


def test_a_gap_answers_with_the_follower_s_last_index() -> None:
    plan = plan_append(
        **_log(dict.fromkeys(range(1, 6), 2)),  # type: ignore[arg-type]
        prev_index=40,
        prev_term=2,
        entries=[(41, 2)],
        commit_index=4,
    )
    assert not plan.accepted and plan.next_index == 6


def test_a_conflict_answers_with_where_the_conflicting_term_began_not_below_the_commit_index() -> None:
    # 1..20 term 2 (committed to 12), 21..60 term 3 written by a leader cut off from the majority.
    terms = {**dict.fromkeys(range(1, 21), 2), **dict.fromkeys(range(21, 61), 3)}
    plan = plan_append(
        **_log(terms),  # type: ignore[arg-type]
        prev_index=55,
        prev_term=4,
        entries=[],
        commit_index=12,
    )
    assert not plan.accepted and plan.next_index == 21  # one round trip, not 35
    terms_same = dict.fromkeys(range(1, 61), 3)
    plan = plan_append(
        **_log(terms_same),  # type: ignore[arg-type]
        prev_index=55,
        prev_term=4,
        entries=[],
        commit_index=12,
    )
    assert plan.next_index == 13


def test_non_consecutive_entries_are_refused() -> None:
    with pytest.raises(ValueError, match="consecutive"):
        plan_append(
            **_log(dict.fromkeys(range(1, 6), 2)),  # type: ignore[arg-type]
            prev_index=4,
            prev_term=2,
            entries=[(6, 2)],
            commit_index=4,
        )


def _grants(
    *,
    candidate_term: int = 8,
    candidate_last: tuple[int, int] = (7, 100),
    own_term: int = 7,
    own_vote: str | None = None,
    hears_leader: bool = False,
    candidate: str = "a",
    own_round: int | None = None,
    promised_to: str | None = None,
) -> bool:
    return grants_pre_vote(
        candidate=candidate,
        candidate_term=candidate_term,
        candidate_last=candidate_last,
        own_id="b",
        own_term=own_term,
        own_vote=own_vote,
        own_last=(7, 100),
        hears_leader=hears_leader,
        own_round=own_round,
        promised_to=promised_to,
    )


def test_a_node_that_hears_a_leader_grants_no_pre_vote() -> None:
    assert _grants()
    assert not _grants(hears_leader=True)


def test_a_pre_vote_follows_the_vote_s_rules() -> None:
    # A log behind ours: refused, as the vote would be.
    assert not _grants(candidate_last=(7, 99))
    assert not _grants(candidate_last=(6, 500))
    assert _grants(candidate_last=(8, 1))
    # A term we have passed, or one in which we voted for another (ourselves: we stand in it).
    assert not _grants(candidate_term=6)
    assert not _grants(candidate_term=7, own_vote="b")
    assert _grants(candidate_term=7, own_vote="a")
    assert _grants(candidate_term=8, own_vote="b")


def test_two_nodes_asking_at_once_do_not_both_win() -> None:
    # b's own round for term 8 is open: it yields to a lower id, not to a higher one.
    assert _grants(candidate="a", own_round=8)
    assert not _grants(candidate="c", own_round=8)
    assert _grants(candidate="c", own_round=7)
    # One promise per term: c asking after a was granted is refused.
    assert not _grants(candidate="c", promised_to="a")
    assert _grants(candidate="a", promised_to="a")
    # A higher id whose log is ahead of ours is granted even while our round is open: we cannot win
    # against it (it refuses us), so holding it back could leave no electable candidate.
    assert _grants(candidate="c", own_round=8, candidate_last=(7, 101))
    assert _grants(candidate="c", own_round=8, candidate_last=(8, 1))


@pytest.mark.parametrize(
    "lasts",
    [
        (a, b, c)
        for a in ((7, 100), (7, 101), (8, 5))
        for b in ((7, 100), (7, 101), (8, 5))
        for c in ((7, 100), (7, 101), (8, 5))
    ],
)
def test_three_nodes_all_asking_at_once_always_have_an_electable_candidate(
    lasts: tuple[tuple[int, int], ...],
) -> None:
    """Every node's round open for the same term, logs in any order (S14 seed 2 had the longest log at
    the highest id): some candidate gets a majority, itself and one grant."""
    ids = ("n1", "n2", "n3")

    def grants(voter: int, candidate: int) -> bool:
        return grants_pre_vote(
            candidate=ids[candidate],
            candidate_term=8,
            candidate_last=lasts[candidate],
            own_id=ids[voter],
            own_term=7,
            own_vote=None,
            own_last=lasts[voter],
            hears_leader=False,
            own_round=8,
        )

    winners = [c for c in range(3) if sum(grants(v, c) for v in range(3) if v != c) >= 1]
    assert winners


def test_a_pre_vote_round_is_won_by_a_majority_of_grants() -> None:
    round_ = PreVote()
    assert not round_.won(5)
    round_.start(9)
    round_.answer("b", 9, True)
    assert not round_.won(5)
    round_.answer("c", 8, True)  # an earlier round's answer
    round_.answer("d", 9, False)
    assert not round_.won(5)
    round_.answer("e", 9, True)
    assert round_.won(5)


def test_a_silent_voter_of_an_older_release_is_presumed_to_grant_at_the_round_s_end() -> None:
    round_ = PreVote()
    round_.start(4)
    round_.answer("b", 4, False)  # this release, refusing: never presumed
    assert not round_.won_at_end(3, connected=["b"])
    round_.start(5)
    assert round_.won_at_end(3, connected=["c"])  # c never answered any pre-vote
    round_.answer("c", 5, False)
    round_.start(6)
    assert not round_.won_at_end(3, connected=["c"])  # c answers pre-votes: its silence is no grant


def test_a_voter_heard_keeping_alive_is_this_release_and_its_silence_no_grant() -> None:
    """A node cut off with its connections still open (S19: n5) must not stand on presumed grants from
    members of this release that simply cannot reach it: their keepalives said which release they run."""
    round_ = PreVote()
    round_.heard_from("b")
    round_.heard_from("c")
    round_.start(7)
    assert not round_.won_at_end(3, connected=["b", "c"])
    round_.answer("b", 7, True)
    assert round_.won(3)
