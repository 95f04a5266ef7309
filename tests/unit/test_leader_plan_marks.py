"""PlanMarks (daemon.leader.plans): commands marked as needing no schedule plan are skipped by one
proposal's `needing`, by object, and only until an UpdateTask comes before them; and the Complete
messages.results builds (fields set, not messages copied) is the copy's bytes."""

from __future__ import annotations

from cronraft.daemon.leader import messages
from cronraft.daemon.leader.leases import LeaseState
from cronraft.daemon.leader.plans import PlanMarks
from cronraft.proto.v1 import commands_pb2, common_pb2
from tests.unit.leader_rig import LeaderRig

Command = commands_pb2.Command


def _fire(execution_id: str) -> Command:
    return Command(fire=commands_pb2.Fire(task_id="t", execution_id=execution_id))


def _complete(execution_id: str) -> Command:
    return Command(
        complete=commands_pb2.Complete(
            execution_id=execution_id, token=common_pb2.FencingToken(term=1, index=2)
        )
    )


def _update() -> Command:
    return Command(update_task=commands_pb2.UpdateTask(task_id="t", spec=common_pb2.TaskSpec(name="t")))


def test_marks_are_by_object_and_used_up_by_one_proposal() -> None:
    marks = PlanMarks()
    a, b = _fire("e1"), _fire("e1")  # the same content, another object
    marks.mark(a)
    assert marks.needing([a, b], {}) == [b]
    assert marks.needing([a, b], {}) == [a, b]  # a second look (a retried proposal): the long way


def test_a_mark_after_an_update_in_the_same_proposal_is_not_honoured() -> None:
    marks = PlanMarks()
    before, after, update = _fire("e1"), _fire("e2"), _update()
    marks.mark(before)
    marks.mark(after)
    assert marks.needing([before, update, after], {}) == [update, after]
    assert marks.spec_changes == 1


def test_unmarked_completes_of_plan_free_leases_are_skipped_as_before() -> None:
    marks = PlanMarks()
    lease = LeaseState("e1", (1, 2), "w1", "t", plan_free=marks.spec_changes)
    complete = _complete("e1")
    assert marks.needing([complete], {"e1": lease}) == []
    update = _update()
    assert marks.needing([update], {}) == [update]
    # An update seen since the grant: the lease's end may plan something now.
    assert marks.needing([complete], {"e1": lease}) == [complete]


def test_a_complete_is_the_result_copied_with_its_token_and_limits() -> None:
    """messages.results sets the token's and the limits' fields rather than copying the messages: the
    same bytes as the copies (token (0, 0) and max_result_bytes 0 included: a field set marks its message
    present, as a copy does)."""
    for max_result_bytes in (0, 1000):
        for term, index in ((0, 0), (3, 7)):
            rig = LeaderRig()
            core = rig.core
            core.ready = core.results_kept = True
            core.result_limits = commands_pb2.Limits(max_result_bytes=max_result_bytes)
            token = common_pb2.FencingToken(term=term, index=index)
            core.keeper.track(
                common_pb2.Execution(execution_id="e1", task_id="t", worker_id="w1", token=token), 10_000
            )
            r = common_pb2.AttemptResult(execution_id="e1", token=token, exit_code=2, result=b"x")
            (cmd,) = messages.results(core, "w1", [r], 5)
            old = Command(stamped_at_ms=5)
            old.limits.CopyFrom(core.result_limits)
            old.complete.execution_id = "e1"
            old.complete.token.CopyFrom(token)
            old.complete.result.CopyFrom(r)
            assert cmd.SerializeToString() == old.SerializeToString()
