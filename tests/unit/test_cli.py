"""schedctl against the in-process fake cluster of test_client.py: exit codes, JSON keys, tables, argv."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from test_client import FakeCluster, dead_address

from cronraft.client.cli import EXIT_OK, EXIT_SERVER, EXIT_UNAVAILABLE, EXIT_USAGE, main

TASK_KEYS = {
    "task_id",
    "state",
    "spec",
    "created_at_ms",
    "created_at",
    "updated_at_ms",
    "updated_at",
    "next_fire_ms",
    "next_fire",
    "last_fired_nominal_ms",
    "last_fired_nominal",
    "fire_count",
    "version",
}
SPEC_KEYS = {
    "name",
    "tags",
    "schedule",
    "payload",
    "queue",
    "timeout_ms",
    "guarantee",
    "priority",
    "max_attempts",
}
EXECUTION_KEYS = {
    "execution_id",
    "task_id",
    "state",
    "nominal_time_ms",
    "nominal_time",
    "fired_at_ms",
    "fired_at",
    "attempt",
    "worker_id",
    "token",
    "leased_at_ms",
    "leased_at",
    "started_at_ms",
    "started_at",
    "finished_at_ms",
    "finished_at",
    "completed_at_ms",
    "completed_at",
    "exit_code",
    "stdout_tail",
    "stderr_tail",
    "error",
    "guarantee",
    "priority",
}


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    fake = FakeCluster()
    try:
        yield fake
    finally:
        fake.stop()


class Run:
    def __init__(self, cluster: FakeCluster, capsys: pytest.CaptureFixture[str]) -> None:
        self.cluster = cluster
        self.capsys = capsys

    def __call__(self, *argv: str, server: str | None = None) -> tuple[int, str, str]:
        code = main(["--server", server or self.cluster.follower_address, *argv])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *argv: str) -> Any:
        code, out, err = self("--output", "json", *argv)
        assert code == EXIT_OK, err
        assert out.endswith("\n")
        return json.loads(out)  # exactly one document: json.loads rejects trailing data


@pytest.fixture
def run(cluster: FakeCluster, capsys: pytest.CaptureFixture[str]) -> Run:
    return Run(cluster, capsys)


HELLO = [
    "task",
    "create",
    "--name",
    "hello",
    "--cron",
    "*/1 * * * *",
    "--tz",
    "Europe/Paris",
    "--",
    "echo",
    "hello",
]


def test_create_the_documented_example(run: Run, cluster: FakeCluster) -> None:
    doc = run.json(*HELLO)
    assert set(doc) == TASK_KEYS and set(doc["spec"]) == SPEC_KEYS
    assert doc["state"] == "scheduled" and doc["task_id"] == "t0001"
    assert doc["spec"]["schedule"]["kind"] == "cron"
    assert doc["spec"]["schedule"]["expression"] == "*/1 * * * *"
    assert doc["spec"]["schedule"]["time_zone"] == "Europe/Paris"
    assert doc["spec"]["payload"] == {"kind": "command", "argv": ["echo", "hello"], "env": {}, "cwd": ""}
    assert doc["spec"]["guarantee"] == "at_least_once" and doc["spec"]["priority"] == "medium"
    assert isinstance(doc["next_fire_ms"], int) and doc["next_fire"].endswith("Z")
    # The write went to the follower, then to the leader it named.
    assert cluster.methods("n2") == ["CreateTask"] and cluster.methods("n1") == ["CreateTask"]


def test_create_table_output_and_options(run: Run, cluster: FakeCluster) -> None:
    code, out, err = run(
        "task",
        "create",
        "--name",
        "nightly",
        "--every",
        "1h30m",
        "--anchor",
        "2025-01-01T00:00:00Z",
        "--start-at",
        "2025-01-01T00:00:00+01:00",
        "--end-at",
        "2026-01-01T00:00:00[Europe/Paris]",
        "--max-runs",
        "10",
        "--queue",
        "batch",
        "--timeout",
        "5m",
        "--guarantee",
        "exactly-once",
        "--priority",
        "high",
        "--max-attempts",
        "3",
        "--tag",
        "team=ops",
        "--tag",
        "env=prod",
        "--",
        "backup",
        "--all",
    )
    assert code == EXIT_OK, err
    assert "nightly" in out and "every 1h30m" in out and "backup --all" in out and "team=ops" in out
    spec = cluster.store.tasks["t0001"].spec
    assert spec.schedule.fixed_rate.period_ms == 5_400_000
    assert spec.schedule.start_at_ms == 1_735_686_000_000 and spec.schedule.max_runs == 10
    assert spec.timeout_ms == 300_000 and spec.queue == "batch" and spec.max_attempts == 3
    assert spec.guarantee == 2 and spec.priority == 1 and dict(spec.tags) == {"team": "ops", "env": "prod"}


def test_argv_after_double_dash_is_kept_verbatim(run: Run, cluster: FakeCluster) -> None:
    doc = run.json(
        "task", "create", "--name", "ls", "--at", "+10m", "--", "ls", "-la", "--color", "--", "x y"
    )
    assert doc["spec"]["payload"]["argv"] == ["ls", "-la", "--color", "--", "x y"]
    assert doc["spec"]["schedule"]["kind"] == "at" and doc["spec"]["schedule"]["at_ms"] > 0


def test_shell_takes_one_string(run: Run, cluster: FakeCluster) -> None:
    doc = run.json(
        "task", "create", "--name", "sh", "--cron", "0 * * * *", "--shell", "--", "echo $HOME | wc -c"
    )
    assert doc["spec"]["payload"] == {"kind": "shell", "script": "echo $HOME | wc -c"}
    code, out, err = run(
        "task", "create", "--name", "sh", "--cron", "0 * * * *", "--shell", "--", "echo", "hi"
    )
    assert code == EXIT_USAGE and "--shell takes exactly one argument" in err and out == ""
    code, _, err = run("task", "create", "--name", "none", "--cron", "0 * * * *")
    assert code == EXIT_USAGE and "missing command" in err
    assert len(cluster.store.tasks) == 1


def test_bad_cron_is_validated_by_the_server(run: Run, cluster: FakeCluster) -> None:
    code, out, err = run("task", "create", "--name", "bad", "--cron", "* * *", "--", "true")
    assert code == EXIT_USAGE and out == ""
    assert err == "error: spec.schedule.cron.expression: expected 5 or 6 fields, got 3\n"
    assert ("n1", "CreateTask") in cluster.store.calls  # it reached the leader: no client-side cron parser


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--every", "5x"], "--every"),
        (["--cron", "* * * * *", "--timeout", "ten"], "--timeout"),
        (["--at", "2025-06-01T09:00:00"], "--at"),
        (["--cron", "* * * * *", "--end-at", "soon"], "--end-at"),
        (["--cron", "* * * * *", "--tag", "novalue"], "--tag"),
        (["--cron", "* * * * *", "--guarantee", "twice"], "--guarantee"),
        (["--cron", "* * * * *", "--max-runs", "-1"], "--max-runs"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(
    run: Run, cluster: FakeCluster, flags: list[str], named: str
) -> None:
    code, out, err = run("task", "create", "--name", "x", *flags, "--", "true")
    assert code == EXIT_USAGE and out == ""
    assert err.startswith(f"error: {named}: ") and "Traceback" not in err
    assert cluster.store.calls == []


def test_usage_errors(run: Run) -> None:
    code, _, err = run("task", "create", "--name", "x", "--", "true")  # no schedule
    assert code == EXIT_USAGE and err.startswith("error: ") and "usage:" in err
    code, _, err = run("task", "create", "--name", "x", "--cron", "* * * * *", "--at", "+1m", "--", "true")
    assert code == EXIT_USAGE and "not allowed with" in err
    code, _, err = run("task", "create", "--name", "x", "--every", "1m", "--tz", "UTC", "--", "true")
    assert code == EXIT_USAGE and "--tz applies to --cron only" in err
    code, _, err = run("task", "get", "t1", "--", "x")
    assert code == EXIT_USAGE and "only taken by `task create`" in err
    code, _, err = run("bogus")
    assert code == EXIT_USAGE and "invalid choice" in err
    code, _, err = run("--timeout", "0", "cluster", "status")
    assert code == EXIT_USAGE and "--timeout" in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == EXIT_OK
    assert "schedctl" in capsys.readouterr().out
    assert main(["task", "create", "--help"]) == EXIT_OK
    assert "--shell" in capsys.readouterr().out


def test_get_list_and_table(run: Run, cluster: FakeCluster) -> None:
    run.json(*HELLO)
    for i in range(4):
        run.json("task", "create", "--name", f"job-{i}", "--every", "5m", "--tag", f"n={i % 2}", "--", "true")
    code, out, _ = run("task", "get", "t0001")
    assert code == EXIT_OK and "hello" in out and "cron */1 * * * * (Europe/Paris)" in out
    code, out, _ = run("task", "list")
    lines = out.splitlines()
    assert code == EXIT_OK and lines[0].split() == [
        "TASK_ID",
        "NAME",
        "STATE",
        "SCHEDULE",
        "NEXT_FIRE",
        "FIRES",
    ]
    assert len(lines) == 6 and "hello" in lines[1] and lines[1].index("hello") == lines[0].index("NAME")
    docs = run.json("task", "list", "--name-prefix", "job-", "--limit", "3")
    assert [d["spec"]["name"] for d in docs] == ["job-0", "job-1", "job-2"]
    assert all(set(d) == TASK_KEYS for d in docs)
    assert [d["spec"]["name"] for d in run.json("task", "list", "--tag", "n=1")] == ["job-1", "job-3"]
    assert run.json("task", "list", "--state", "cancelled") == []
    # --output may also follow the sub-command.
    code, out, _ = run("task", "list", "--output", "json", "--state", "scheduled")
    assert code == EXIT_OK and len(json.loads(out)) == 5
    code, _, err = run("task", "list", "--state", "asleep")
    assert code == EXIT_USAGE and err.startswith("error: --state: unknown task state")


def test_not_found_is_exit_1(run: Run) -> None:
    code, out, err = run("task", "get", "t9999")
    assert code == EXIT_SERVER and out == "" and err == "error: task t9999 not found\n"


def test_cancel_several(run: Run, cluster: FakeCluster) -> None:
    run.json(*HELLO)
    run.json(*HELLO)
    docs = run.json("task", "cancel", "t0001")
    assert [d["state"] for d in docs] == ["cancelled"]
    code, out, err = run("--output", "json", "task", "cancel", "t0001", "t0002", "t0404")
    assert code == EXIT_SERVER
    assert [d["task_id"] for d in json.loads(out)] == ["t0002"]
    assert (
        "error: t0001: task t0001 is already cancelled" in err and "error: t0404: task t0404 not found" in err
    )


def test_executions_and_execution_get(run: Run, cluster: FakeCluster) -> None:
    run.json(*HELLO)
    cluster.add_execution("t0001", 0, stdout_tail=b"hello\n", stderr_tail=b"warn \xff\n")
    cluster.add_execution("t0001", 1, state=6)
    docs = run.json("executions", "t0001")
    assert len(docs) == 2 and all(set(d) == EXECUTION_KEYS for d in docs)
    assert docs[0]["state"] == "succeeded" and docs[0]["token"] == {"term": 3, "index": 100}
    assert (
        docs[0]["nominal_time"] == "2025-06-15T15:06:40.000Z"
        and docs[0]["nominal_time_ms"] == 1_750_000_000_000
    )
    assert docs[0]["stderr_tail"] == "warn \ufffd\n" and docs[0]["guarantee"] == "unspecified"
    assert [d["execution_id"] for d in run.json("executions", "t0001", "--state", "cancelled")] == [
        "t0001-e1"
    ]
    assert len(run.json("executions", "t0001", "--limit", "1")) == 1
    code, out, _ = run("executions", "t0001")
    assert code == EXIT_OK and "EXECUTION_ID" in out and "t0001-e0" in out and "succeeded" in out
    code, out, _ = run("execution", "get", "t0001-e0")
    assert code == EXIT_OK and "--- stdout (tail) ---\nhello" in out and "warn \ufffd" in out
    assert run.json("execution", "get", "t0001-e0")["stdout_tail"] == "hello\n"
    code, _, err = run("executions", "t0404")
    assert code == EXIT_SERVER and "not found" in err


def test_cluster_status(run: Run, cluster: FakeCluster) -> None:
    doc = run.json("cluster", "status")
    assert (
        doc["node_id"] == "n2"
        and doc["is_leader"] is False
        and doc["leader_address"] == cluster.leader_address
    )
    assert doc["term"] == 3 and [m["node_id"] for m in doc["members"]] == ["n1", "n2"]
    code, out, _ = run("cluster", "status")
    assert code == EXIT_OK and "NODE_ID" in out and cluster.leader_address in out


def test_unavailable_is_exit_3(run: Run) -> None:
    code, out, err = run("--timeout", "0.3", "task", "list", server=f"{dead_address()},{dead_address()}")
    assert code == EXIT_UNAVAILABLE and out == "" and err.startswith("error: cluster unavailable")
    code, _, err = run("--timeout", "300ms", *HELLO, server=dead_address())
    assert code == EXIT_UNAVAILABLE and "Traceback" not in err


def test_server_from_environment(
    cluster: FakeCluster, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRONRAFT_SERVER", f"{dead_address()},{cluster.leader_address}")
    assert main(["-o", "json", "cluster", "status"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["is_leader"] is True


def test_argv_words_without_double_dash(run: Run, cluster: FakeCluster) -> None:
    doc = run.json("task", "create", "--name", "w", "--every", "1m", "echo", "hi")
    assert doc["spec"]["payload"]["argv"] == ["echo", "hi"]


def test_cancel_stops_when_the_cluster_is_unreachable(run: Run) -> None:
    code, out, err = run("--timeout", "0.3", "task", "cancel", "a", "b", server=dead_address())
    assert code == EXIT_UNAVAILABLE and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: a: cluster unavailable")
