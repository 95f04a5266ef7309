"""PlanMarks (daemon.leader.plans): commands marked as needing no schedule plan are skipped by one
proposal's `needing`, by object, and only until an UpdateTask comes before them."""

from __future__ import annotations

from cronraft.daemon.leader.leases import LeaseState
from cronraft.daemon.leader.plans import PlanMarks
from cronraft.proto.v1 import commands_pb2, common_pb2

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
