"""Calendar includes are bounded and walked iteratively (issue 11): include depth at most 16, an
expansion of at most 256 calendars and 4,096 rules, cycles refused, checked by one function
(firing.check_calendar) that the leader and the state machine both call; a store holding a longer chain
(written before the bounds) is still walked without recursion."""

from __future__ import annotations

import sys

import pytest

from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import commands_pb2
from cronraft.proto.v1 import common_pb2 as pb
from cronraft.raft import firing
from cronraft.raft.calendar import (
    MAX_EXPANDED_CALENDARS,
    MAX_EXPANDED_RULES,
    MAX_INCLUDE_DEPTH,
    MAX_RULES,
    CalendarSet,
    validate_calendar,
)
from cronraft.raft.codec import encode_batch
from cronraft.raft.kv import MemKV
from cronraft.raft.state import StateMachine

T0 = 1_767_225_600_000


def calendar(name: str, *include: str, rules: int = 1) -> pb.Calendar:
    c = pb.Calendar(name=name, include=list(include))
    for _ in range(rules):
        c.exclude.add().weekdays.days.append(6)
    return c


def chain(n: int) -> dict[str, pb.Calendar]:
    """c0 <- c1 <- ... <- c{n-1}: each calendar includes the one before it (c{n-1} is n-1 deep)."""
    return {f"c{i}": calendar(f"c{i}", *([f"c{i - 1}"] if i else [])) for i in range(n)}


def refusal(cal: pb.Calendar, known: dict[str, pb.Calendar]) -> tuple[str, str]:
    with pytest.raises(InvalidArgument) as raised:
        validate_calendar(cal, known=known)
    return raised.value.field, raised.value.problem


def test_sixteen_includes_deep_is_accepted_seventeen_is_refused() -> None:
    known = chain(MAX_INCLUDE_DEPTH + 1)  # c15 is 15 deep, c16 16
    validate_calendar(calendar("top", "c15"), known=known)  # 16 deep
    field, problem = refusal(calendar("top", "c16"), known)
    assert field == "calendar.include"
    assert problem == (
        f"include depth above {MAX_INCLUDE_DEPTH}: top -> c16 -> c15 -> c14 -> ... -> c2 -> c1 -> c0 "
        f"(at most {MAX_INCLUDE_DEPTH} includes from a calendar down to the last one it includes)"
    )


def test_a_chain_of_a_thousand_is_refused_without_recursion() -> None:
    """The poison pill of issue 11: a store that already holds a chain far deeper than the recursion
    limit (written before the bound) is walked iteratively, by validation and by calendar sets."""
    known = chain(max(5_000, sys.getrecursionlimit() * 2))
    top = f"c{len(known) - 1}"
    field, problem = refusal(calendar("deeper", top), known)
    assert field == "calendar.include" and f"include depth above {MAX_INCLUDE_DEPTH}" in problem
    cal_set = CalendarSet([top], known)  # every calendar of the chain, once
    assert cal_set.excluded(T0 + 2 * 86_400_000) == "weekend (Sat) (calendar " + top + ")"  # a Saturday


def test_a_diamond_counts_its_longest_chain() -> None:
    """A calendar reached twice is walked once, and its depth still counts on the longer path."""
    known = chain(15)  # c14 is 14 deep
    known["short"] = calendar("short", "c14")  # 15 deep
    known["mid"] = calendar("mid", "short")  # 16 deep
    validate_calendar(calendar("top", "c14", "short"), known=known)  # 16 deep through short
    field, problem = refusal(calendar("top", "c14", "mid"), known)  # 17 deep through mid
    assert field == "calendar.include"
    assert "top -> mid -> short" in problem


def test_an_expansion_of_more_than_256_calendars_is_refused() -> None:
    known = {f"leaf{i}": calendar(f"leaf{i}") for i in range(MAX_EXPANDED_CALENDARS)}
    groups = [[f"leaf{i}" for i in range(g, MAX_EXPANDED_CALENDARS, 64)] for g in range(64)]
    known.update({f"g{g}": calendar(f"g{g}", *leaves) for g, leaves in enumerate(groups)})
    field, problem = refusal(calendar("all", *(f"g{g}" for g in range(64))), known)
    assert (field, problem) == (
        "calendar.include",
        f"expands to more than {MAX_EXPANDED_CALENDARS} calendars (with its includes)",
    )
    validate_calendar(calendar("some", *(f"g{g}" for g in range(32))), known=known)  # 1 + 32 + 128


def test_an_expansion_of_more_than_4096_rules_is_refused() -> None:
    count = MAX_EXPANDED_RULES // MAX_RULES
    known = {f"big{i}": calendar(f"big{i}", rules=MAX_RULES) for i in range(count)}
    validate_calendar(calendar("ok", *(f"big{i}" for i in range(count - 1))), known=known)
    field, problem = refusal(calendar("too-many", *known, rules=1), known)
    assert (field, problem) == (
        "calendar.include",
        f"expands to more than {MAX_EXPANDED_RULES} rules (with its includes' rules)",
    )


def test_cycles_are_still_refused() -> None:
    known = chain(5)
    assert refusal(calendar("c0", "c4"), known) == (
        "calendar.include",
        "cycle c0 -> c4 -> c3 -> c2 -> c1 -> c0",
    )


# --------------------------------------------------------------- through the state machine (one check)


class Machine:
    def __init__(self) -> None:
        self.sm = StateMachine(MemKV())
        self.index = 0

    def put(self, cal: pb.Calendar) -> commands_pb2.CommandResult:
        self.index += 1
        cmd = commands_pb2.Command(stamped_at_ms=T0, put_calendar=commands_pb2.PutCalendar(calendar=cal))
        raw = self.sm.apply_entry(self.index, encode_batch([cmd]))
        assert raw is not None
        (res,) = commands_pb2.BatchResult.FromString(raw).results
        return res

    def leader_check(self, cal: pb.Calendar) -> None:
        with self.sm.kv.read() as txn:
            firing.check_calendar(txn, cal)


def test_a_chain_built_from_the_top_down_is_refused_when_it_gets_too_deep() -> None:
    """Every calendar first stands alone, then each is edited to include the next: each edit is one
    include deep, but the calendars above it grow deeper. The includers' depth is checked too."""
    m = Machine()
    for i in range(MAX_INCLUDE_DEPTH + 2):
        assert m.put(calendar(f"c{i}")).applied
    for i in range(MAX_INCLUDE_DEPTH):
        assert m.put(calendar(f"c{i}", f"c{i + 1}")).applied  # c0 is now i + 1 deep
    edit = calendar(f"c{MAX_INCLUDE_DEPTH}", f"c{MAX_INCLUDE_DEPTH + 1}")
    with pytest.raises(InvalidArgument) as raised:
        m.leader_check(edit)
    res = m.put(edit)
    assert (res.applied, res.error_code) == (False, "invalid_argument")
    assert res.error == str(raised.value)  # the leader and the state machine refuse alike
    assert res.error.startswith(f"calendar.include: include depth above {MAX_INCLUDE_DEPTH}: c0 -> c1 ->")
    assert "would be 17 deep" in res.error


def test_the_state_machine_refuses_a_deep_chain_the_leader_would_have_refused() -> None:
    m = Machine()
    for i in range(MAX_INCLUDE_DEPTH + 1):
        assert m.put(calendar(f"c{i}", *([f"c{i - 1}"] if i else []))).applied
    res = m.put(calendar("top", f"c{MAX_INCLUDE_DEPTH}"))
    assert (res.applied, res.error_code) == (False, "invalid_argument")
    assert res.error.startswith("calendar.include: include depth above 16")
    assert m.put(calendar("fine", f"c{MAX_INCLUDE_DEPTH - 1}")).applied  # the log moved on


@pytest.mark.parametrize("bad", ["", "a b", "é", "x" * 65])
def test_an_include_that_is_no_calendar_name_is_refused_before_any_lookup(bad: str) -> None:
    """The gRPC fuzzer's find: an empty include name reached LMDB, which refuses an empty key
    (BadValsizeError, answered UNKNOWN)."""
    looked_up: list[str] = []

    class Spy(dict[str, pb.Calendar]):
        def get(self, key: str, default: object = None) -> pb.Calendar | None:  # type: ignore[override]
            looked_up.append(key)
            return None

    cal = pb.Calendar(name="c1", include=[bad])
    with pytest.raises(InvalidArgument) as err:
        validate_calendar(cal, known=Spy())
    assert err.value.field == "calendar.include[0]" and looked_up == []
