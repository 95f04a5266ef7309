"""The client side of namespaces (issue 13): the SDK's namespace on creates, calendars and purges (the
default one sent empty, as stored), schedctl --namespace / $CRONRAFT_NAMESPACE, --all-namespaces and its
NAMESPACE column, and the namespace in JSON (task import reads it back)."""

from __future__ import annotations

import pytest
from fake_cluster import FakeCluster
from fake_cluster import cluster_fixture as cluster  # noqa: F401  (the `cluster` fixture)
from test_cli import HELLO, Run, run  # noqa: F401  (the `run` fixture)

from cronraft.client import Client, _namespace, _tables
from cronraft.client._render import spec_to_json, task_to_json
from cronraft.client._spec_json import spec_from_json, task_spec_from_json_line
from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2


def test_the_sdk_sends_its_namespace_and_the_default_one_empty(cluster: FakeCluster) -> None:  # noqa: F811
    spec = common_pb2.TaskSpec(name="n")
    spec.schedule.cron.expression = "* * * * *"
    spec.payload.command.argv.append("true")
    with Client(cluster.follower_address, namespace="team-a") as client:
        assert client.create_task_spec(spec).spec.namespace == "team-a"
        assert spec.namespace == ""  # the caller's spec is not changed
        other = common_pb2.TaskSpec()
        other.CopyFrom(spec)
        other.namespace = "team-b"
        assert client.create_task_spec(other).spec.namespace == "team-b"  # the spec's own wins
        client.put_calendar(common_pb2.Calendar(name="hol"))
        assert cluster.store.last("PutCalendar").calendar.namespace == "team-a"
        client.purge_dead_letters(task_id="t0001")
        assert cluster.store.last("PurgeDeadLetters").namespace == "team-a"
    with Client(cluster.follower_address) as client:
        assert client.namespace == "default"
        # Sent empty: as stored, and as a node from before namespaces expects.
        assert client.create_task_spec(spec).spec.namespace == ""
    with pytest.raises(InvalidArgument, match=r"^namespace: 'Team A' is not a namespace"):
        Client(cluster.follower_address, namespace="Team A")


def test_list_scope() -> None:
    assert _namespace.list_scope(None, "team-a", False) == ("team-a", False)
    assert _namespace.list_scope("team-b", "team-a", False) == ("team-b", False)
    assert _namespace.list_scope(None, "default", False) == ("", False)
    assert _namespace.list_scope("x", "team-a", True) == ("", True)


def test_schedctl_namespace_flag_and_environment(
    run: Run,  # noqa: F811
    cluster: FakeCluster,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert run.json("--namespace", "team-a", *HELLO)["namespace"] == "team-a"
    assert run.json(*HELLO[:2], "-n", "team-c", *HELLO[2:])["namespace"] == "team-c"  # after, short
    assert run.json(*HELLO)["namespace"] == "default"
    monkeypatch.setenv("CRONRAFT_NAMESPACE", "team-b")
    assert run.json(*HELLO)["spec"]["namespace"] == "team-b"
    doc = run.json("--namespace", "default", *HELLO)  # the flag beats the environment
    assert doc["namespace"] == "default" and "namespace" not in doc["spec"]


def test_tables_show_a_namespace_column_only_across_namespaces() -> None:
    a = common_pb2.Task(task_id="t1")
    a.spec.namespace = "team-a"
    b = common_pb2.Task(task_id="t2")
    assert not _tables.task_table([a, b]).startswith("NAMESPACE")
    table = _tables.task_table([a, b], namespaces=True).splitlines()
    assert table[0].split()[:2] == ["NAMESPACE", "TASK_ID"]
    assert table[1].split()[0] == "team-a" and table[2].split()[0] == "default"
    assert "namespace" in _tables.task_detail(a) and "team-a" in _tables.task_detail(a)
    letters = [common_pb2.DeadLetter(execution_id="e1", namespace="team-a")]
    assert _tables.dead_letter_table(letters, namespaces=True).startswith("NAMESPACE")
    calendars = [common_pb2.Calendar(name="hol", namespace="team-b")]
    assert "team-b" in _tables.calendar_table(calendars, namespaces=True)


def test_json_carries_the_namespace_and_import_reads_it() -> None:
    task = common_pb2.Task(task_id="01JF0000000000000000000000")
    task.spec.name = "n"
    task.spec.namespace = "team-a"
    task.spec.schedule.cron.expression = "* * * * *"
    task.spec.payload.command.argv.append("true")
    doc = task_to_json(task)
    assert doc["namespace"] == "team-a" and doc["spec"]["namespace"] == "team-a"
    assert spec_from_json(doc["spec"]).namespace == "team-a"
    import json

    assert task_spec_from_json_line(json.dumps(doc), "line 1").namespace == "team-a"
    task.spec.namespace = ""
    doc = task_to_json(task)
    assert doc["namespace"] == "default" and "namespace" not in doc["spec"]  # import: --namespace's
    assert spec_from_json(spec_to_json(task.spec)) == task.spec
