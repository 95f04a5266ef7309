"""Which of the leader's commands need a schedule plan (raft.leaderplan: fire instants computed once by
the leader, not by each replica with its own tzdata): `PlanMarks`.

A plan costs the driver a read of the execution and of its task for every command; this knows which
need none: the Fire and Grant made by the last tick from a task whose spec asks nothing
version-dependent (raft.fireplan.needs_plan), and the Complete or ExpireLease of a lease whose task's
spec asked nothing at its grant (LeaseState.plan_free), unless an UpdateTask (the only command changing
a spec) was seen since: `spec_changes` counts those, prepared or committed. A plan skipped wrongly is no
fault (apply computes what a plan lacks, as when the state changed since the plan was made), only a
wider window for that case.

Pure: no store, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cronraft.daemon.leader.leases import LeaseState
from cronraft.proto.v1 import commands_pb2

Command = commands_pb2.Command
# Taken from its class: looked up on a message, a method costs a look-up of a field of that name first (upb).
_kind_of = Command.WhichOneof


class PlanMarks:
    def __init__(self) -> None:
        self.spec_changes = 0
        # The commands known to need none, marked as they are made (`mark`), until the next `needing`.
        # Keyed by the command object (its id; the object is kept, so that the id is not reused): a
        # lookup per command instead of reading its kind and its execution id (upb: a new object per
        # field read; issue 16).
        self._marked: dict[int, Command] = {}

    def mark(self, cmd: Command) -> None:
        """`cmd`, about to be proposed, needs no schedule plan (`needing` skips it)."""
        self._marked[id(cmd)] = cmd

    def needing(self, cmds: Sequence[Command], leases: Mapping[str, LeaseState]) -> list[Command]:
        """The commands of `cmds` (about to be proposed) whose schedule plan is to be computed: all but
        those known to need none. Called once per proposal, right after the tick or the results that made
        them: the marks are used up. `leases`: the running leases (LeaseKeeper.leases)."""
        marked, self._marked = self._marked, {}
        changes = self.spec_changes
        out: list[Command] = []
        for cmd in cmds:
            # A mark holds unless an UpdateTask came before it here.
            if id(cmd) in marked and self.spec_changes == changes:
                continue
            kind = _kind_of(cmd, "body")
            if kind in {"complete", "expire_lease"}:
                lease = leases.get(getattr(cmd, kind).execution_id)
                if lease is not None and lease.plan_free == self.spec_changes:
                    continue
            elif kind == "update_task":
                self.spec_changes += 1
            out.append(cmd)
        return out


__all__ = ["PlanMarks"]
