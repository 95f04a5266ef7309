"""Namespaces (issue 13): validation, calendars unique per namespace and resolved in the namespace of
whoever names them, list filters, the stored form of the default namespace (empty: stores written before
namespaces keep their keys and digest), and per-namespace role checks (daemon.security)."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from cronraft.daemon.security import authz
from cronraft.daemon.security.authz import Principal, readable, require_all_namespaces, require_role
from cronraft.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import state as sm
from cronraft.raft.firing import calendar_key
from cronraft.raft.validate import check_namespace, namespace_name, validate_spec
from cronraft.tokenfile import check_roles, parse_role
from tests.unit.test_state import T0, Command, Log, create, spec, tid

WEEKENDS = common_pb2.CalendarRule(weekdays=common_pb2.WeekdaySet(days=[6, 7]))


def put(name: str, namespace: str = "", include: tuple[str, ...] = ()) -> Command:
    c = common_pb2.Calendar(name=name, namespace=namespace, include=list(include))
    c.exclude.append(WEEKENDS)
    return Command(stamped_at_ms=T0, put_calendar=commands_pb2.PutCalendar(calendar=c))


def delete(name: str, namespace: str = "") -> Command:
    return Command(
        stamped_at_ms=T0, delete_calendar=commands_pb2.DeleteCalendar(name=name, namespace=namespace)
    )


def with_calendars(namespace: str, *names: str) -> common_pb2.TaskSpec:
    s = spec(namespace=namespace)
    s.schedule.calendars.extend(names)
    return s


# ------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize("name", ["team-a", "a", "0", "a" * 63, "x-1-y"])
def test_namespace_names_accepted(name: str) -> None:
    assert check_namespace(name, "namespace") == name
    validate_spec(spec(namespace=name))


@pytest.mark.parametrize("name", ["Team", "-a", "a_b", "a/b", "a" * 64, "*", "a b", "é"])
def test_bad_namespace_names_refused_naming_the_field(name: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^spec\.namespace: .*not a namespace"):
        validate_spec(spec(namespace=name))


def test_default_is_stored_empty() -> None:
    assert check_namespace("", "namespace") == ""
    assert check_namespace("default", "namespace") == ""
    assert namespace_name("") == "default"
    assert calendar_key("", "hol") == calendar_key("default", "hol") == "hol"  # keys from before
    assert calendar_key("team-a", "hol") == "team-a/hol"


# ------------------------------------------------------------------------------------- calendars


def test_calendar_names_are_unique_per_namespace() -> None:
    log = Log()
    r = log.apply(put("hol"), put("hol", "team-a"), put("hol", "default"))
    assert all(x.applied for x in r)
    assert r[1].calendar.namespace == "team-a"
    assert r[2].calendar.namespace == ""  # "default" is stored empty: the same calendar as r[0]
    with log.sm.kv.read() as txn:
        assert sm.read_calendar(txn, "hol").version == 1
        assert sm.read_calendar(txn, "hol", "team-a") is not None
        assert sm.read_calendar(txn, "hol", "team-b") is None
        assert [c.namespace for c in sm.calendars_page(txn)[0]] == [""]
        assert [c.namespace for c in sm.calendars_page(txn, namespace="team-a")[0]] == ["team-a"]
        assert len(sm.calendars_page(txn, namespace=None)[0]) == 2
        assert sm.calendars_page(txn, namespace="team-b")[0] == []


def test_a_tasks_calendars_resolve_in_its_namespace() -> None:
    log = Log()
    log.apply(put("only-a", "team-a"), put("only-default"))
    (bad,) = log.apply(create(tid(1), with_calendars("team-b", "only-a")))
    assert not bad.applied and bad.error_code == "invalid_argument"
    assert bad.error == "spec.schedule.calendars[0]: no calendar named 'only-a' in namespace team-b"
    (bad,) = log.apply(create(tid(2), with_calendars("", "only-a")))
    assert bad.error == "spec.schedule.calendars[0]: no calendar named 'only-a'"  # as before namespaces
    (ok,) = log.apply(create(tid(3), with_calendars("team-a", "only-a")))
    assert ok.applied, ok.error
    # The task is in use of team-a's calendar, not of a same-named one elsewhere.
    (ok2,) = log.apply(put("only-a"))
    assert ok2.applied
    (gone,) = log.apply(delete("only-a"))
    assert gone.applied, gone.error
    (in_use,) = log.apply(delete("only-a", "team-a"))
    assert in_use.error_code == "in_use" and tid(3) in in_use.error


def test_includes_resolve_in_the_calendars_namespace() -> None:
    log = Log()
    log.apply(put("base", "team-a"))
    (bad,) = log.apply(put("top", "team-b", include=("base",)))
    assert not bad.applied and "base" in bad.error
    (ok,) = log.apply(put("top", "team-a", include=("base",)))
    assert ok.applied, ok.error
    (in_use,) = log.apply(delete("base", "team-a"))
    assert in_use.error_code == "in_use" and "calendar top" in in_use.error
    (not_found,) = log.apply(delete("base", "team-b"))
    assert not_found.error == "calendar 'base' not found in namespace team-b"


def test_list_tasks_by_namespace() -> None:
    log = Log()
    log.apply(create(tid(1), spec()), create(tid(2), spec(namespace="team-a")))
    with log.sm.kv.read() as txn:
        assert [t.task_id for t in sm.list_tasks(txn, namespace="")[0]] == [tid(1)]
        assert [t.task_id for t in sm.list_tasks(txn, namespace="default")[0]] == [tid(1)]
        assert [t.task_id for t in sm.list_tasks(txn, namespace="team-a")[0]] == [tid(2)]
        assert len(sm.list_tasks(txn)[0]) == 2  # None: every namespace


def test_stored_bytes_of_the_default_namespace_do_not_change() -> None:
    """A task and a calendar in the default namespace are stored exactly as before the field existed."""
    log = Log()
    log.apply(put("hol"), create(tid(1), with_calendars("", "hol")))
    with log.sm.kv.read() as txn:
        task = sm.read_task(txn, tid(1))
        cal = sm.read_calendar(txn, "hol")
        assert txn.get("calendars", b"hol") is not None  # the key is the bare name, as before
    assert task is not None and cal is not None
    assert not task.spec.namespace and not cal.namespace
    assert b"namespace" not in task.SerializeToString()
    assert common_pb2.TaskSpec.FromString(task.spec.SerializeToString()).namespace == ""
    # An empty proto3 string is not serialized: the bytes are those of a spec without the field.
    assert len(common_pb2.TaskSpec(namespace="").SerializeToString()) == 0


# ----------------------------------------------------------------------------------- role checks


ALICE = Principal("alice", check_roles({"team-a": ["submitter"]}, "roles"), "token")
RITA = Principal("rita", check_roles({"*": ["reader"], "team-a": ["operator"]}, "roles"), "token")


def test_roles_per_namespace() -> None:
    token = authz._current.set(ALICE)
    try:
        require_role("CreateTask", "team-a")
        require_role("GetTask", "team-a", hide="task x not found")
        assert readable("team-a") and not readable("team-b") and not readable("")
        with pytest.raises(PermissionDenied, match=r"CreateTask needs role submitter .* in namespace team-b"):
            require_role("CreateTask", "team-b")
        with pytest.raises(PermissionDenied, match=r"in namespace default"):
            require_role("CreateTask", "")
        # A stored object of a namespace the caller cannot read: NOT_FOUND, the same as a missing one.
        with pytest.raises(NotFound, match=r"^task x not found$"):
            require_role("CancelTask", "team-b", hide="task x not found")
        with pytest.raises(PermissionDenied, match="DeleteTask needs role operator"):
            require_role("DeleteTask", "team-a", hide="task x not found")
        with pytest.raises(PermissionDenied, match=r'over all namespaces needs role reader .*"\*"'):
            require_all_namespaces("ListTasks")
    finally:
        authz._current.reset(token)


def test_a_star_reader_reads_everywhere_and_acts_where_granted() -> None:
    token = authz._current.set(RITA)
    try:
        require_all_namespaces("ListTasks")
        require_role("GetTask", "team-b", hide="x")
        require_role("PurgeDeadLetters", "team-a")
        with pytest.raises(PermissionDenied):  # visible, so PERMISSION_DENIED, not NOT_FOUND
            require_role("CancelTask", "team-b", hide="x")
    finally:
        authz._current.reset(token)


def test_anonymous_holds_every_role_everywhere() -> None:
    assert authz.current_principal() is authz.ANONYMOUS
    require_role("DeleteTask", "team-z", hide="x")
    require_all_namespaces("ListDeadLetters")


def test_interceptor_admits_a_role_held_in_some_namespace_only_for_scheduler_methods_and_workers() -> None:
    assert ALICE.has_somewhere("submitter") and not ALICE.has("submitter")
    assert authz.namespaced("/cronraft.v1.Scheduler/CreateTask")
    assert not authz.namespaced("/cronraft.v1.Cluster/Status")
    # A worker bound to namespaces: the leader leases it only theirs (tests/unit/test_worker_namespaces.py).
    assert authz.namespaced("/cronraft.v1.WorkerGateway/Connect")


def test_token_roles_per_namespace() -> None:
    assert parse_role("submitter@team-a") == ("team-a", "submitter")
    assert parse_role("reader") == ("*", "reader")
    assert parse_role("worker@team-a") == ("team-a", "worker")  # a worker bound to team-a
    for bad, problem in [
        ("reader@", "ROLE@NAMESPACE"),
        ("reader@Team", "namespace 'Team'"),
        ("boss@team-a", "unknown role 'boss'"),
    ]:
        with pytest.raises(InvalidArgument, match=problem):
            parse_role(bad)
    with pytest.raises(InvalidArgument, match="namespace 'a_b'"):
        check_roles({"a_b": ["reader"]}, "roles")


def test_a_jwt_carries_roles_per_namespace(tmp_path: Path) -> None:
    from test_security import NOW_MS, _hs256, _jwt

    verifier, key = _hs256(tmp_path)

    def sign(data: bytes) -> bytes:
        return hmac.new(key, data, hashlib.sha256).digest()

    claims = {"sub": "ci", "roles": {"team-a": ["submitter"], "*": ["reader"]}, "exp": NOW_MS / 1000 + 60}
    p = verifier.verify(_jwt({"alg": "HS256"}, claims, sign))
    assert p.has("submitter", "team-a") and not p.has("submitter", "team-b") and p.has("reader", "team-b")
    bad = {**claims, "roles": {"Team A": ["reader"]}}
    with pytest.raises(Unauthenticated, match="namespace 'Team A'"):
        verifier.verify(_jwt({"alg": "HS256"}, bad, sign))
