"""schedctl takes a task's name where it takes a task id (client/cli/task_names.py)."""

from __future__ import annotations

import argparse

from fake_cluster import FakeCluster
from fake_cluster import cluster_fixture as cluster  # noqa: F401  (the `cluster` fixture)
from test_cli import EXIT_OK, EXIT_USAGE, HELLO, Run, run  # noqa: F401  (the `run` fixture)

from cronraft.client.cli import task_names
from cronraft.errors import InvalidArgument, NotFound, Unavailable
from cronraft.proto.v1 import common_pb2


def _create(r: Run, name: str) -> str:
    doc = r.json("task", "create", "--name", name, "--every", "5m", "--", "true")
    return str(doc["task_id"])


def test_a_unique_name_stands_for_its_task(run: Run, cluster: FakeCluster) -> None:  # noqa: F811
    run.json(*HELLO)
    other = _create(run, "hello-world")  # a name that only starts with it is not it
    hello = next(t for t in run.json("task", "list") if t["spec"]["name"] == "hello")["task_id"]
    assert run.json("task", "get", "hello")["task_id"] == hello
    paused = run.json("task", "pause", "hello-world")
    assert paused["task_id"] == other and paused["state"] == "paused"
    code, _, err = run("task", "cancel", "hello", "hello-world")  # several, by name
    assert code == EXIT_OK, err
    assert {t["task_id"]: t["state"] for t in run.json("task", "list")} == {
        hello: "cancelled",
        other: "cancelled",
    }


def test_a_name_two_tasks_share_does_nothing_and_lists_their_ids(run: Run, cluster: FakeCluster) -> None:  # noqa: F811
    first, second = _create(run, "dup"), _create(run, "dup")
    code, out, err = run("task", "pause", "dup")
    assert code == EXIT_USAGE and out == ""
    assert "2 tasks are named 'dup'" in err and first in err and second in err
    assert {t["state"] for t in run.json("task", "list")} == {"scheduled"}  # neither paused
    assert all(method != "PauseTask" for _, method in cluster.store.calls)


def test_an_id_is_never_looked_up_as_a_name(run: Run, cluster: FakeCluster) -> None:  # noqa: F811
    ulid = "01M990QVT8FHE0548MV8BA2RMB"
    code, _, err = run("task", "get", ulid)
    assert code != EXIT_OK and ulid in err  # not found, as an id
    assert all(method != "ListTasks" for _, method in cluster.store.calls)


def test_executions_take_a_name_for_their_task(run: Run, cluster: FakeCluster) -> None:  # noqa: F811
    task_id = _create(run, "nightly")
    cluster.add_execution(task_id, 0, state=common_pb2.EXECUTION_SUCCEEDED)
    listed = run.json("executions", "--task", "nightly")
    assert [e["task_id"] for e in listed] == [task_id]
    assert [e["task_id"] for e in run.json("executions", "nightly")] == [task_id]


def test_a_name_nobody_has_is_explained_as_such() -> None:
    """The real server refuses a non-id as an id; the CLI says there is no task of that name instead."""
    args = argparse.Namespace(unknown_task_names=(["nosuch"], "ops"))
    shown = task_names.explain(
        args, InvalidArgument("task_id", "not a valid id (expected 26 characters, got 6)")
    )
    assert isinstance(shown, NotFound)
    assert str(shown) == "no task named 'nosuch' in namespace 'ops' (nor is it a task id: 26 characters)"
    other = Unavailable("cluster unavailable")
    assert task_names.explain(args, other) is other
    assert task_names.explain(None, other) is other  # an error before the arguments were parsed


def test_ids_look_like_ulids() -> None:
    assert task_names.looks_like_id("01M990QVT8FHE0548MV8BA2RMB")
    assert not task_names.looks_like_id("01m990qvt8fhe0548mv8ba2rmb")  # ids print upper case
    assert not task_names.looks_like_id("nightly-report")
    assert not task_names.looks_like_id("01M990QVT8FHE0548MV8BA2RMI")  # I is not in the alphabet
