"""schedctl against the in-process fake cluster of fake_cluster.py: exit codes, JSON keys, tables, argv."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fake_cluster import FakeCluster, cluster_fixture, dead_address

from cronraft.client.cli import EXIT_OK, EXIT_SERVER, EXIT_UNAVAILABLE, EXIT_USAGE, main
from cronraft.proto.v1 import common_pb2

TASK_KEYS = {
    "task_id",
    "namespace",
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
    "stored_executions",
    "version",
    "pause_note",
    "paused_at_ms",
    "paused_at",
    "next_due_ms",
    "next_due",
    "catchup_fired",
    "last_finished_ms",
    "last_finished",
    "last_outcome",
    "last_execution_id",
    "outcomes",
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
    "misfire",
    "catchup_window_ms",
    "max_catchup",
    "overlap",
    "retry",
    "notify",
    "worker_labels",
    "max_concurrency",
    "start_deadline_ms",
    "depends_on",
    "dependency_deadline_ms",
    "sensor",
    "retention",
}
EXECUTION_KEYS = {
    "execution_id",
    "namespace",
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
    "not_before_ms",
    "not_before",
    "waiting_reason",
    "dead_lettered",
    "return_value",
    "attempts",
    "cancel_requested_at_ms",
    "cancel_requested_at",
    "cancel_reason",
    "manual",
    "result_size",
}


cluster = cluster_fixture  # the `cluster` fixture, also for `from test_cli import cluster`


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
    assert set(doc) == TASK_KEYS | {"warnings"} and set(doc["spec"]) == SPEC_KEYS  # create: issue 19
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


def test_bad_cron_is_refused_before_any_call(run: Run, cluster: FakeCluster) -> None:
    # schedctl reads --cron with the leader's own evaluator (issue 19: errors in the user's terms).
    code, out, err = run("task", "create", "--name", "bad", "--cron", "* * *", "--", "true")
    assert code == EXIT_USAGE and out == ""
    assert err.startswith("error: --cron: expected 5 or 6 fields, got 3 in '* * *': write minute hour")
    assert cluster.store.calls == []


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--every", "5x"], "--every"),
        (["--cron", "* * * * *", "--exec-timeout", "ten"], "--exec-timeout"),
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
    assert code == EXIT_USAGE and "error: --tz: applies to --cron only" in err
    code, _, err = run("task", "get", "t1", "--", "x")
    assert code == EXIT_USAGE and "only taken by `task create` and `task update`" in err
    code, _, err = run("bogus")
    assert code == EXIT_USAGE and "invalid choice" in err
    code, _, err = run("--rpc-timeout", "0", "cluster", "status")
    assert code == EXIT_USAGE and "--rpc-timeout" in err


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
    # Storage, per member: n1 never answered a probe (null), n2 refuses writes that add data.
    assert doc["members"][0]["storage"] is None and doc["storage"] is None
    n2 = doc["members"][1]["storage"]
    assert n2["exhausted"] is True and n2["refused"] == "data" and n2["reason"].startswith("disk almost")
    code, out, _ = run("cluster", "status")
    assert code == EXIT_OK and "NODE_ID" in out and cluster.leader_address in out
    assert "STORAGE" in out and "EXHAUSTED (data)" in out
    assert "WARNING: n2's storage is exhausted: disk almost full: 3.0 MiB free on /data/n2" in out


def test_unavailable_is_exit_3(run: Run) -> None:
    code, out, err = run("--rpc-timeout", "0.3", "task", "list", server=f"{dead_address()},{dead_address()}")
    assert code == EXIT_UNAVAILABLE and out == "" and err.startswith("error: cluster unavailable")
    code, _, err = run("--rpc-timeout", "300ms", *HELLO, server=dead_address())
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
    code, out, err = run("--rpc-timeout", "0.3", "task", "cancel", "a", "b", server=dead_address())
    assert code == EXIT_UNAVAILABLE and out == ""
    # a is tried; b is not (it would only wait out the timeout again), and says so.
    assert err.startswith("error: a: cluster unavailable")
    assert err.splitlines()[1:] == ["error: b: not tried: the cluster is unreachable"]


# ------------------------------------------------------------------------------------------- issue 3

FIRE_RECORD_KEYS = {
    "task_id",
    "nominal_time_ms",
    "nominal_time",
    "outcome",
    "reason",
    "execution_id",
    "committed_at_ms",
    "committed_at",
    "late_ms",
    "actual_ms",
    "actual",
}
CALENDAR_KEYS = {
    "name",
    "namespace",
    "time_zone",
    "description",
    "exclude",
    "include",
    "version",
    "updated_at_ms",
    "updated_at",
}


def test_create_parses_every_new_flag(run: Run, cluster: FakeCluster) -> None:
    doc = run.json(
        "task", "create", "--name", "n", "--cron", "0 9 * * *", "--tz", "Europe/Paris", "--jitter", "2m",
        "--dst-gap", "skip", "--dst-fold", "both", "--calendar", "fr", "--calendar", "ops",
        "--calendar-action", "roll-preceding", "--misfire", "fire-all", "--catchup-window", "1h",
        "--max-catchup", "4", "--overlap", "buffer-one", "--", "true",
    )  # fmt: skip
    spec = cluster.store.tasks["t0001"].spec
    s = spec.schedule
    assert s.jitter_ms == 120_000 and s.dst_gap == common_pb2.DST_GAP_SKIP
    assert s.dst_fold == common_pb2.DST_FOLD_BOTH and list(s.calendars) == ["fr", "ops"]
    assert s.calendar_action == common_pb2.CALENDAR_ROLL_PRECEDING
    assert spec.misfire == common_pb2.MISFIRE_FIRE_ALL and spec.catchup_window_ms == 3_600_000
    assert spec.max_catchup == 4 and spec.overlap == common_pb2.OVERLAP_BUFFER_ONE
    assert set(doc) == TASK_KEYS | {"warnings"} and set(doc["spec"]) == SPEC_KEYS  # create: issue 19
    assert doc["spec"]["misfire"] == "fire_all" and doc["spec"]["overlap"] == "buffer_one"
    assert doc["spec"]["schedule"]["calendar_action"] == "roll_preceding"
    assert doc["spec"]["schedule"]["dst_gap"] == "skip" and doc["spec"]["schedule"]["calendars"] == [
        "fr",
        "ops",
    ]
    doc = run.json("task", "create", "--name", "d", "--delay", "30m", "--stop-on-failure", "--", "true")
    assert doc["spec"]["schedule"] == {
        **doc["spec"]["schedule"],
        "kind": "fixed_delay",
        "delay_ms": 1_800_000,
        "stop_on_failure": True,
    }
    code, out, _ = run("task", "get", "t0002")
    assert code == EXIT_OK and "delay 30m, stop on failure" in out
    code, out, _ = run("task", "get", "t0001")
    assert "fr, ops (roll_preceding)" in out and "overlap buffer_one" in out and "jitter up to 2m" in out


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--delay", "soon"], "--delay"),
        (["--cron", "* * * * *", "--jitter", "lots"], "--jitter"),
        (["--cron", "* * * * *", "--dst-gap", "jump"], "--dst-gap"),
        (["--cron", "* * * * *", "--dst-fold", "third"], "--dst-fold"),
        (["--cron", "* * * * *", "--calendar-action", "roll"], "--calendar-action"),
        (["--cron", "* * * * *", "--misfire", "maybe"], "--misfire"),
        (["--cron", "* * * * *", "--catchup-window", "1y"], "--catchup-window"),
        (["--cron", "* * * * *", "--max-catchup", "-1"], "--max-catchup"),
        (["--cron", "* * * * *", "--overlap", "queue"], "--overlap"),
        (["--every", "1m", "--stop-on-failure"], "--stop-on-failure"),
    ],
)
def test_bad_new_flags_exit_2_naming_the_flag(
    run: Run, cluster: FakeCluster, flags: list[str], named: str
) -> None:
    code, out, err = run("task", "create", "--name", "x", *flags, "--", "true")
    assert code == EXIT_USAGE and out == "" and err.startswith(f"error: {named}: ")
    assert cluster.store.calls == []


def test_update_changes_only_the_given_flags(run: Run, cluster: FakeCluster) -> None:
    run.json(
        "task",
        "create",
        "--name",
        "t",
        "--cron",
        "0 9 * * *",
        "--tag",
        "team=ops",
        "--tag",
        "old=1",
        "--",
        "x",
    )
    before = cluster.store.tasks["t0001"]
    version = before.version
    doc = run.json(
        "task", "update", "t0001", "--tz", "Asia/Tokyo", "--overlap", "skip", "--tag", "team=dev",
        "--remove-tag", "old", "--jitter", "10s",
    )  # fmt: skip
    request = cluster.store.last("UpdateTask")
    assert request.expected_version == version and request.task_id == "t0001"
    spec = request.spec
    assert spec.schedule.cron.expression == "0 9 * * *" and spec.schedule.cron.time_zone == "Asia/Tokyo"
    assert spec.overlap == common_pb2.OVERLAP_SKIP and dict(spec.tags) == {"team": "dev"}
    assert spec.schedule.jitter_ms == 10_000 and list(spec.payload.command.argv) == ["x"] and spec.name == "t"
    assert doc["spec"]["overlap"] == "skip" and doc["version"] > version
    # -- ARGV replaces the payload; a kind flag replaces the kind.
    run.json("task", "update", "t0001", "--every", "5m", "--", "echo", "new")
    spec = cluster.store.last("UpdateTask").spec
    assert (
        list(spec.payload.command.argv) == ["echo", "new"] and spec.schedule.fixed_rate.period_ms == 300_000
    )
    assert spec.schedule.jitter_ms == 10_000
    run.json("task", "update", "t0001", "--shell", "--", "date | wc")
    assert cluster.store.last("UpdateTask").spec.payload.shell.script == "date | wc"


def test_update_errors(run: Run, cluster: FakeCluster) -> None:
    run.json(*HELLO)
    code, out, err = run("task", "update", "t0001")
    assert code == EXIT_USAGE and "nothing to change" in err and out == ""
    code, _, err = run("task", "update", "t0001", "--anchor", "now")
    assert code == EXIT_USAGE and err.startswith("error: --anchor: applies to --every only")
    code, _, err = run("task", "update", "t0404", "--overlap", "skip")
    assert code == EXIT_SERVER and "not found" in err
    cluster.store.race_updates = 1
    code, out, err = run("task", "update", "t0001", "--overlap", "skip")
    assert code == EXIT_SERVER and out == ""
    assert err.startswith("error: the task changed meanwhile; retry")
    assert [m for m, _ in cluster.store.requests].count("UpdateTask") == 1


def test_pause_resume_trigger_backfill(run: Run, cluster: FakeCluster) -> None:
    run.json(*HELLO)
    doc = run.json("task", "pause", "t0001", "--note", "db migration")
    assert doc["state"] == "paused" and doc["pause_note"] == "db migration" and doc["paused_at"].endswith("Z")
    code, out, _ = run("task", "get", "t0001")
    assert code == EXIT_OK and "db migration" in out and "paused" in out
    code, _, err = run("task", "pause", "t0001")
    assert code == EXIT_SERVER and "not scheduled" in err
    doc = run.json("task", "resume", "t0001", "--replay-missed")
    assert doc["state"] == "scheduled" and cluster.store.last("ResumeTask").replay_missed is True
    run.json("task", "pause", "t0001")
    run.json("task", "resume", "t0001")
    assert cluster.store.last("ResumeTask").replay_missed is False
    doc = run.json("task", "trigger", "t0001")
    assert doc["state"] == "pending" and doc["task_id"] == "t0001"
    code, out, _ = run("task", "trigger", "t0001")
    assert code == EXIT_OK and "execution_id:" in out
    docs = run.json(
        "task",
        "backfill",
        "t0001",
        "--from",
        "2025-01-01T00:00:00Z",
        "--to",
        "2025-01-01T00:02:00Z",
        "--max",
        "2",
    )
    request = cluster.store.last("BackfillTask")
    assert (request.from_ms, request.to_ms, request.max_fires) == (1_735_689_600_000, 1_735_689_720_000, 2)
    assert len(docs) == 2 and docs[0]["nominal_time"] == "2025-01-01T00:00:00.000Z"
    code, out, _ = run(
        "task", "backfill", "t0001", "--from", "2025-01-01T00:00:00Z", "--to", "2025-01-01T00:00:00Z"
    )
    assert code == EXIT_OK and "EXECUTION_ID" in out
    code, _, err = run(
        "task", "backfill", "t0001", "--from", "2025-01-02T00:00:00Z", "--to", "2025-01-01T00:00:00Z"
    )
    assert code == EXIT_USAGE and err.startswith("error: --to: ")
    code, _, err = run("task", "backfill", "t0001", "--to", "2025-01-01T00:00:00Z")
    assert code == EXIT_USAGE and "--from" in err


def _ledger(cluster: FakeCluster) -> None:
    cluster.store.ledger["t0001"] = [
        common_pb2.FireRecord(
            task_id="t0001",
            nominal_time_ms=1_750_000_000_000,
            outcome=common_pb2.FIRED,
            execution_id="t0001-e0",
            late_ms=1_500,
        ),
        common_pb2.FireRecord(
            task_id="t0001",
            nominal_time_ms=1_750_000_060_000,
            outcome=common_pb2.SKIPPED_OVERLAP,
            reason="t0001-e0 still running (overlap skip)",
        ),
        common_pb2.FireRecord(
            task_id="t0001", nominal_time_ms=1_750_000_120_000, outcome=common_pb2.PAUSED, reason="paused"
        ),
    ]


def test_explain_json_and_table(run: Run, cluster: FakeCluster) -> None:
    run.json(*HELLO)
    _ledger(cluster)
    run.json("task", "pause", "t0001", "--note", "holiday freeze")
    doc = run.json(
        "task", "explain", "t0001", "--from", "2025-06-15T15:06:40Z", "--to", "2025-06-15T15:08:00Z"
    )
    request = cluster.store.last("ExplainTask")
    assert (request.from_ms, request.to_ms, request.limit) == (1_750_000_000_000, 1_750_000_080_000, 100)
    assert set(doc) == {"state", "next_fire_ms", "next_fire", "note", "records"}
    assert doc["state"] == "paused" and doc["note"] == "holiday freeze"
    assert [r["outcome"] for r in doc["records"]] == ["fired", "skipped_overlap"]
    assert all(set(r) == FIRE_RECORD_KEYS for r in doc["records"]) and doc["records"][0]["late_ms"] == 1_500
    code, out, _ = run("task", "explain", "t0001", "--limit", "10")
    lines = out.splitlines()
    assert code == EXIT_OK and lines[0].startswith("state:") and "paused" in lines[0]
    assert any(line.startswith("pause_note:") and "holiday freeze" in line for line in lines)
    header = next(i for i, line in enumerate(lines) if line.startswith("NOMINAL_TIME (UTC)"))
    assert lines[header].split()[2:] == ["OUTCOME", "LATE", "EXECUTION_ID", "REASON"]
    rows = lines[header + 1 :]
    assert rows[0].split()[:4] == ["2025-06-15T15:06:40Z", "fired", "1s500ms", "t0001-e0"]
    assert (
        rows[1].split()[:3] == ["2025-06-15T15:07:40Z", "skipped_overlap", "-"] and "still running" in rows[1]
    )
    assert rows[2].split()[1] == "paused" and len(rows) == 3
    code, _, err = run("task", "explain", "t0001", "--limit", "0")
    assert code == EXIT_USAGE and err.startswith("error: --limit:")
    code, _, err = run("task", "explain", "t0404")
    assert code == EXIT_SERVER


def test_preview_json_and_table(run: Run, cluster: FakeCluster) -> None:
    run.json(*HELLO)
    docs = run.json("task", "preview", "t0001", "--from", "2025-06-15T15:06:40Z", "--limit", "3")
    assert cluster.store.last("PreviewTask").count == 3
    assert len(docs) == 3 and set(docs[0]) == {
        "nominal_time_ms",
        "nominal_time",
        "actual_ms",
        "actual",
        "local_time",
        "notes",
    }
    assert docs[1]["actual"] == "2025-06-15T16:06:41.000Z" and docs[1]["notes"] == ["jittered 1s"]
    code, out, _ = run("task", "preview", "t0001", "--limit", "2")
    lines = out.splitlines()
    assert code == EXIT_OK and lines[0].split() == [
        "NOMINAL_TIME",
        "(UTC)",
        "DUE",
        "(UTC)",
        "LOCAL_TIME",
        "DAY",
        "NOTES",
    ]
    assert len(lines) == 3 and "jittered 1s" in lines[2] and "[Europe/Paris]" in lines[1]
    code, _, err = run("task", "preview", "t0001", "--limit", "0")
    assert code == EXIT_USAGE and err.startswith("error: --limit:")


def test_calendar_put_from_flags(run: Run, cluster: FakeCluster) -> None:
    doc = run.json(
        "calendar", "put", "fr", "--tz", "Europe/Paris", "--description", "French business days",
        "--date", "2025-12-24", "--date", "2025-12-31", "--holidays", "FR", "--holidays", "de-by",
        "--weekdays", "6,7", "--date-range", "2025-08-01..2025-08-15", "--time-of-day", "22:00-06:00",
        "--exclude-cron", "* 12 * * *",
    )  # fmt: skip
    cal = cluster.store.last("PutCalendar").calendar
    assert cal.name == "fr" and cal.time_zone == "Europe/Paris" and cal.description == "French business days"
    kinds = [r.WhichOneof("kind") for r in cal.exclude]
    assert kinds == ["dates", "holidays", "holidays", "weekdays", "date_range", "time_of_day", "cron"]
    assert list(cal.exclude[0].dates.dates) == ["2025-12-24", "2025-12-31"]
    assert (cal.exclude[2].holidays.country, cal.exclude[2].holidays.subdivision) == ("DE", "BY")
    assert list(cal.exclude[3].weekdays.days) == [6, 7] and cal.exclude[6].cron == "* 12 * * *"
    assert set(doc) == CALENDAR_KEYS and doc["version"] > 0
    assert doc["exclude"][5] == {"kind": "time_of_day", "start": "22:00", "end": "06:00"}
    doc = run.json("calendar", "put", "ops", "--weekdays", "sat,sun", "--include", "fr")
    assert doc["include"] == ["fr"] and doc["exclude"] == [{"kind": "weekdays", "days": [6, 7]}]
    code, out, _ = run("calendar", "get", "fr")
    assert code == EXIT_OK and "holidays DE-BY" in out and "date range 2025-08-01..2025-08-15" in out
    code, out, _ = run("calendar", "list")
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "TIME_ZONE", "RULES", "INCLUDE", "VERSION", "DESCRIPTION"]
    assert lines[1].split()[:3] == ["fr", "Europe/Paris", "7"] and lines[2].split()[:4] == [
        "ops",
        "UTC",
        "1",
        "fr",
    ]
    assert [c["name"] for c in run.json("calendar", "list")] == ["fr", "ops"]


def test_calendar_put_from_file_round_trips(run: Run, cluster: FakeCluster, tmp_path: Any) -> None:
    run.json("calendar", "put", "fr", "--holidays", "FR", "--weekdays", "6,7", "--tz", "Europe/Paris")
    exported = run.json("calendar", "get", "fr")
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(exported))
    doc = run.json("calendar", "put", "fr", "--file", str(path))
    assert doc["exclude"] == exported["exclude"] and doc["time_zone"] == "Europe/Paris"
    assert doc["version"] > exported["version"]
    code, _, err = run("calendar", "put", "other", "--file", str(path))
    assert code == EXIT_USAGE and err.startswith("error: calendar.name: ")
    code, _, err = run("calendar", "put", "fr", "--file", str(path), "--date", "2025-01-01")
    assert code == EXIT_USAGE and "--file takes the whole calendar" in err
    path.write_text('{"name": "fr", "exclude": [{"kind": "weekdays", "days": [8]}]}')
    code, _, err = run("calendar", "put", "fr", "--file", str(path))
    assert code == EXIT_USAGE and err.startswith("error: calendar.exclude[0].days: ")
    path.write_text("{not json")
    code, _, err = run("calendar", "put", "fr", "--file", str(path))
    assert code == EXIT_USAGE and err.startswith("error: --file: ")
    code, _, err = run("calendar", "put", "fr", "--file", str(tmp_path / "missing.json"))
    assert code == EXIT_USAGE and err.startswith("error: --file: cannot read")


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--date", "2025-02-30"], "--date"),
        (["--date", "25-01-01"], "--date"),
        (["--holidays", "France"], "--holidays"),
        (["--weekdays", "0,8"], "--weekdays"),
        (["--date-range", "2025-08-15..2025-08-01"], "--date-range"),
        (["--date-range", "2025-08-01"], "--date-range"),
        (["--time-of-day", "9-17"], "--time-of-day"),
        (["--time-of-day", "09:00-24:00"], "--time-of-day"),
    ],
)
def test_calendar_flags_are_checked(run: Run, cluster: FakeCluster, flags: list[str], named: str) -> None:
    code, out, err = run("calendar", "put", "c", *flags)
    assert code == EXIT_USAGE and out == "" and err.startswith(f"error: {named}: ")
    assert cluster.store.calls == []


def test_calendar_errors_and_delete(run: Run, cluster: FakeCluster) -> None:
    code, _, err = run("calendar", "put", "empty")
    assert code == EXIT_USAGE and "needs a rule" in err
    code, _, err = run("calendar", "put", "c", "--include", "nope")
    assert code == EXIT_USAGE and err.startswith("error: calendar.include: ")
    code, _, err = run("calendar", "get", "nope")
    assert code == EXIT_SERVER and "not found" in err
    run.json("calendar", "put", "c", "--weekdays", "7")
    run.json("task", "create", "--name", "uses", "--cron", "0 9 * * *", "--calendar", "c", "--", "true")
    code, _, err = run("calendar", "delete", "c")
    assert code == EXIT_SERVER and "is used by t" in err
    cluster.store.tasks.clear()
    assert run.json("calendar", "delete", "c") == {"name": "c", "deleted": True}
    code, out, _ = run("calendar", "delete", "c")
    assert code == EXIT_SERVER and out == ""


def test_execution_cancel_several(run: Run, cluster: FakeCluster) -> None:
    run.json(*HELLO)
    cluster.add_execution("t0001", 0, state=common_pb2.EXECUTION_RUNNING)
    cluster.add_execution("t0001", 1, state=common_pb2.EXECUTION_BUFFERED)
    cluster.add_execution("t0001", 2)
    assert run.json("executions", "t0001", "--state", "buffered")[0]["state"] == "buffered"
    code, out, err = run(
        "-o", "json", "execution", "cancel", "t0001-e0", "t0001-e1", "t0001-e2", "e404", "--reason", "bad"
    )
    assert code == EXIT_SERVER
    assert [(d["execution_id"], d["state"]) for d in json.loads(out)] == [
        ("t0001-e0", "cancelled"),
        ("t0001-e1", "cancelled"),
    ]
    assert "error: t0001-e2: execution t0001-e2 already ended" in err and "error: e404: " in err
    assert cluster.store.last("CancelExecution").reason == "bad"
    cluster.add_execution("t0001", 3, state=common_pb2.EXECUTION_PENDING)
    code, out, _ = run("execution", "cancel", "t0001-e3")
    assert code == EXIT_OK and "t0001-e3" in out and "cancelled" in out


def test_schedule_preview_is_wired_and_needs_no_server(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--server", dead_address(), "-o", "json", "schedule", "preview", "--every", "1h"]
    code = main([*argv, "--anchor", "2025-01-01T00:00:00Z", "--from", "2025-01-01T00:30:00Z", "--count", "2"])
    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    assert json.loads(out)  # the document is cli/preview.py's; here only the wiring is tested
    assert main(["schedule", "preview", "--every", "0s"]) == EXIT_USAGE


# ------------------------------------------------------------------------------------------- issue 4

DEAD_LETTER_KEYS = {
    "execution_id",
    "namespace",
    "task_id",
    "task_name",
    "reason",
    "attempts",
    "dead_at_ms",
    "dead_at",
    "nominal_time_ms",
    "nominal_time",
    "stdout_tail",
    "stderr_tail",
    "redriven_as",
}


class FakeStdin:
    """A terminal (or not) on stdin, with the operator's answer."""

    def __init__(self, answer: str, tty: bool = True) -> None:
        self.answer = answer
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty

    def readline(self) -> str:
        return self.answer


def test_create_http_payload_and_every_policy_flag(run: Run, cluster: FakeCluster, tmp_path: Any) -> None:
    body = tmp_path / "body.json"
    body.write_bytes(b'{"a": 1}')
    doc = run.json(
        "task", "create", "--name", "h", "--every", "5m",
        "--http-url", "https://example.com/hook", "--http-method", "post",
        "--http-header", "Content-Type: application/json", "--http-header", "X-Key:v",
        "--http-body", f"@{body}", "--http-expect", "200,204", "--http-expect", "202",
        "--retry-initial", "2s", "--retry-multiplier", "1.5", "--retry-max", "10m",
        "--retry-on-exit", "503,429", "--retry-on-exit", "502", "--no-retry-on-exit", "404",
        "--no-retry-on-timeout",
        "--notify-webhook", "https://hooks.example.com/x?a=1,b=2,events=failure+dead-letter",
        "--notify-webhook", "https://hooks.example.com/all",
        "--notify", "page-ops,events=timeout",
        "--worker-label", "zone=eu", "--worker-label", "gpu=yes", "--max-concurrency", "2",
    )  # fmt: skip
    spec = cluster.store.tasks["t0001"].spec
    h = spec.payload.http
    assert (h.method, h.url, h.body) == ("POST", "https://example.com/hook", b'{"a": 1}')
    assert dict(h.headers) == {"Content-Type": "application/json", "X-Key": "v"}
    assert list(h.expected_status) == [200, 204, 202]
    r = spec.retry
    assert (r.initial_backoff_ms, r.multiplier, r.max_backoff_ms) == (2_000, 1.5, 600_000)
    assert list(r.retryable_exit_codes) == [503, 429, 502] and list(r.non_retryable_exit_codes) == [404]
    assert r.no_retry_on_timeout is True
    assert spec.notify[0].webhook_url == "https://hooks.example.com/x?a=1,b=2"
    assert list(spec.notify[0].events) == [common_pb2.NOTIFY_FAILURE, common_pb2.NOTIFY_DEAD_LETTER]
    assert spec.notify[1].webhook_url == "https://hooks.example.com/all" and not spec.notify[1].events
    assert spec.notify[2].notifier == "page-ops"
    assert list(spec.notify[2].events) == [common_pb2.NOTIFY_TIMEOUT]
    assert dict(spec.worker_labels) == {"zone": "eu", "gpu": "yes"} and spec.max_concurrency == 2
    assert set(doc["spec"]) == SPEC_KEYS and doc["spec"]["payload"]["kind"] == "http"
    assert doc["spec"]["payload"]["headers"] == {"Content-Type": "application/json", "X-Key": "v"}
    assert doc["spec"]["notify"][2] == {"kind": "notifier", "name": "page-ops", "events": ["timeout"]}
    code, out, _ = run("task", "get", "t0001")
    assert code == EXIT_OK and "http POST https://example.com/hook, 2 header(s)" in out
    assert "backoff 2s x1.5 up to 10m, only status 503,429,502, never status 404, no retry on timeout" in out
    assert "webhook https://hooks.example.com/x?a=1,b=2 on failure+dead_letter" in out
    assert "worker_labels:" in out and "gpu=yes, zone=eu" in out


def test_an_http_tasks_retry_flags_name_no_response(run: Run, cluster: FakeCluster) -> None:
    """An http attempt that got no response reports -1; argparse would read "-1,503" as a flag, so the
    flags take the word no-response for it (and -1 itself after '=')."""
    url = ("--http-url", "https://example.com/hook")
    code, _, err = run(
        "task", "create", "--name", "h", "--every", "5m", *url, "--retry-on-exit", "503,no-response"
    )
    assert code == EXIT_OK, err
    assert list(cluster.store.tasks["t0001"].spec.retry.retryable_exit_codes) == [503, -1]
    code, _, err = run("task", "create", "--name", "i", "--every", "5m", *url, "--retry-never-on-exit=-1,404")
    assert code == EXIT_OK, err
    assert list(cluster.store.tasks["t0002"].spec.retry.non_retryable_exit_codes) == [-1, 404]
    assert "only status 503,no-response" in run("task", "get", "t0001")[1]
    assert "never status no-response,404" in run("task", "get", "t0002")[1]
    code, _, err = run(
        "task", "create", "--name", "c", "--every", "5m", "--retry-on-exit", "no-response", "--", "true"
    )
    assert code != EXIT_OK and "--retry-on-exit" in err and "-1 is not an exit code (0-255)" in err


def test_create_handler_payload_and_literal_body(run: Run, cluster: FakeCluster) -> None:
    doc = run.json(
        "task", "create", "--name", "hd", "--cron", "0 * * * *", "--handler", "resize",
        "--handler-args", '{"width": 640}',
    )  # fmt: skip
    assert doc["spec"]["payload"] == {
        "kind": "handler",
        "name": "resize",
        "args": {"width": 640},
        "args_json": '{"width": 640}',
    }
    run.json("task", "create", "--name", "b", "--every", "1m", "--http-url", "http://h", "--http-body", "@@x")
    assert cluster.store.tasks["t0002"].spec.payload.http.body == b"@x"
    assert not cluster.store.tasks["t0002"].spec.HasField("retry")  # no retry flag: no policy


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--http-url", "http://h", "--", "true"], "give exactly one payload"),
        (["--handler", "h", "--http-url", "http://h"], "(got --http-url and --handler)"),
        (["--shell", "--handler", "h", "--", "x"], "give exactly one payload"),
        (["--http-method", "POST", "--", "true"], "error: --http-method: applies to --http-url only"),
        (["--handler-args", "{}", "--", "true"], "error: --handler-args: applies to --handler only"),
        (["--handler", "h", "--handler-args", "[1]"], "error: --handler-args: expected a JSON object"),
        (["--handler", "h", "--handler-args", "{x"], "error: --handler-args: not JSON"),
        (["--http-url", "example.com"], "error: --http-url: expected an http:// or https:// URL"),
        (["--http-url", "http://h", "--http-header", "nocolon"], "error: --http-header: "),
        (["--http-url", "http://h", "--http-expect", "600"], "error: --http-expect: 600 is out of range"),
        (["--http-url", "http://h", "--http-body", "@/nonexistent"], "error: --http-body: cannot read"),
        (["--retry-on-exit", "one", "--", "x"], "error: --retry-on-exit: expected integers"),
        (["--retry-initial", "0s", "--", "x"], "error: --retry-initial: must be positive"),
        (["--retry-max-backoff", "1s", "--retry-initial", "5s", "--", "x"], "error: --retry-max-backoff: "),
        (["--retry-multiplier", "0.5", "--", "x"], "error: --retry-multiplier: "),
        (["--retry-on-exit", "1", "--retry-never-on-exit", "1", "--", "x"], "error: --retry-never-on-exit: "),
        (["--notify-webhook", "https://h,events=sometimes", "--", "x"], "error: --notify-webhook: unknown"),
        (["--notify-webhook", "https://h,events=", "--", "x"], "error: --notify-webhook: empty events="),
        (["--notify-command", "page", "--", "x"], "error: --notify-command: removed: a task may not make"),
        (["--notify", "bad name", "--", "x"], "error: --notify: 'bad name': 1-64 characters"),
        (["--worker-label", "zone", "--", "x"], "error: --worker-label: expected KEY=VALUE"),
        (["--max-concurrency", "-1", "--", "x"], "error: --max-concurrency: must not be negative"),
    ],
)
def test_bad_payload_and_policy_flags_exit_2(
    run: Run, cluster: FakeCluster, flags: list[str], message: str
) -> None:
    code, out, err = run("task", "create", "--name", "x", "--every", "1m", *flags)
    assert code == EXIT_USAGE and out == "" and message in err, err
    assert cluster.store.calls == []


def test_update_changes_only_the_given_policy_flags(run: Run, cluster: FakeCluster) -> None:
    run.json(
        "task", "create", "--name", "u", "--every", "1m", "--http-url", "https://h/a", "--http-header",
        "A: 1", "--retry-initial", "3s", "--retry-on-exit", "503", "--notify-webhook", "https://n",
        "--worker-label", "zone=eu", "--worker-label", "gpu=yes",
    )  # fmt: skip
    run.json(
        "task", "update", "t0001", "--retry-max-backoff", "1m", "--http-header", "B: 2",
        "--http-method", "PUT", "--clear-worker-label", "gpu", "--max-concurrency", "3",
    )  # fmt: skip
    spec = cluster.store.last("UpdateTask").spec
    assert spec.retry.initial_backoff_ms == 3_000 and spec.retry.max_backoff_ms == 60_000
    assert list(spec.retry.retryable_exit_codes) == [503] and spec.retry.multiplier == 2.0
    assert spec.payload.http.url == "https://h/a" and spec.payload.http.method == "PUT"
    assert dict(spec.payload.http.headers) == {"A": "1", "B": "2"}
    assert dict(spec.worker_labels) == {"zone": "eu"} and spec.max_concurrency == 3
    assert len(spec.notify) == 1
    run.json("task", "update", "t0001", "--clear-retry", "--clear-notify")
    spec = cluster.store.last("UpdateTask").spec
    assert not spec.HasField("retry") and not spec.notify and spec.payload.http.method == "PUT"
    run.json("task", "update", "t0001", "--handler", "h", "--handler-args", '{"n": 1}')
    run.json("task", "update", "t0001", "--handler-args", '{"n": 2}')  # alone: changes the handler's args
    assert cluster.store.last("UpdateTask").spec.payload.handler == common_pb2.HandlerPayload(
        name="h", args_json='{"n": 2}'
    )
    code, _, err = run("task", "update", "t0001", "--http-method", "GET")  # not an http payload now
    assert code == EXIT_USAGE and "error: --http-method: applies to --http-url only" in err
    code, _, err = run("task", "update", "t0001", "--clear-retry", "--retry-max-backoff", "1m")
    assert code == EXIT_USAGE and "--clear-retry drops the retry policy" in err
    code, _, err = run("task", "update", "t0001", "--clear-notify", "--notify-webhook", "https://n")
    assert code == EXIT_USAGE and "--clear-notify" in err


def test_dlq_list_show_table_and_json(run: Run, cluster: FakeCluster) -> None:
    run.json(*HELLO)
    cluster.add_dead_letter("t0001", 0)
    cluster.add_dead_letter("t0001", 1, redriven_as="t0001-m9")
    cluster.add_dead_letter("t0002", 2, task_name="other")
    cluster.add_execution(
        "t0001",
        0,
        state=common_pb2.EXECUTION_FAILED,
        dead_lettered=True,
        attempt=2,
        attempts=[
            common_pb2.AttemptSummary(
                attempt=1,
                worker_id="w1",
                outcome=common_pb2.ATTEMPT_FAILED,
                exit_code=1,
                started_at_ms=1_750_000_000_000,
                finished_at_ms=1_750_000_001_500,
            ),
            common_pb2.AttemptSummary(
                attempt=2, worker_id="w2", outcome=common_pb2.ATTEMPT_TIMED_OUT, error="killed after 1s"
            ),
        ],
    )
    docs = run.json("dlq", "list")
    assert [d["execution_id"] for d in docs] == ["t0001-e0", "t0001-e1", "t0002-e2"]
    assert all(set(d) == DEAD_LETTER_KEYS for d in docs) and docs[0]["stderr_tail"] == "boom\n"
    assert docs[1]["redriven_as"] == "t0001-m9" and docs[0]["dead_at"] == "2025-06-15T15:06:40.040Z"
    assert [d["execution_id"] for d in run.json("dlq", "list", "--task", "t0002")] == ["t0002-e2"]
    assert len(run.json("dlq", "list", "--limit", "2")) == 2
    code, out, _ = run("dlq", "list")
    lines = out.splitlines()
    assert code == EXIT_OK and lines[0].split() == [
        "EXECUTION_ID",
        "TASK_ID",
        "TASK_NAME",
        "DEAD_AT",
        "ATTEMPTS",
        "REDRIVEN_AS",
        "REASON",
    ]
    assert lines[1].split()[:6] == ["t0001-e0", "t0001", "hello", "2025-06-15T15:06:40Z", "3", "-"]
    assert lines[1].endswith("exit code 1 after 3 attempts") and len(lines) == 4
    doc = run.json("dlq", "show", "t0001-e0")
    assert set(doc) == DEAD_LETTER_KEYS | {"execution"} and doc["reason"] == "exit code 1 after 3 attempts"
    assert [a["outcome"] for a in doc["execution"]["attempts"]] == ["failed", "timed_out"]
    assert doc["execution"]["dead_lettered"] is True
    assert run.json("dlq", "show", "t0002-e2")["execution"] is None  # history trimmed: still shown
    code, out, _ = run("dlq", "show", "t0001-e0")
    assert code == EXIT_OK and "reason:" in out and "--- attempts ---" in out
    assert "--- stderr (tail) ---\nboom" in out and "--- stdout (tail) ---\npartial" in out
    attempts = out.split("--- attempts ---\n")[1].splitlines()
    assert attempts[0].split() == [
        "ATTEMPT",
        "OUTCOME",
        "EXIT_CODE",
        "WORKER",
        "STARTED_AT",
        "DURATION",
        "ERROR",
    ]
    assert attempts[1].split() == ["1", "failed", "1", "w1", "2025-06-15T15:06:40Z", "1s500ms", "-"]
    assert attempts[2].split()[:2] == ["2", "timed_out"] and "killed after 1s" in attempts[2]
    code, out, _ = run("dlq", "show", "t0002-e2")
    assert "(the execution is no longer stored)" in out
    code, out, err = run("dlq", "show", "nope")
    assert code == EXIT_SERVER and out == "" and "not found" in err


def test_dlq_redrive(run: Run, cluster: FakeCluster) -> None:
    run.json(*HELLO)
    for n in range(3):
        cluster.add_dead_letter("t0001", n)
    docs = run.json("dlq", "redrive", "t0001-e0")
    assert len(docs) == 1 and set(docs[0]) == EXECUTION_KEYS and docs[0]["state"] == "pending"
    assert list(cluster.store.last("RedriveDeadLetters").execution_ids) == ["t0001-e0"]
    code, out, _ = run("dlq", "redrive", "--task", "t0001", "--limit", "1")
    assert code == EXIT_OK and "EXECUTION_ID" in out
    request = cluster.store.last("RedriveDeadLetters")
    assert request.task_id == "t0001" and request.limit == 1 and not request.execution_ids
    code, _, err = run("dlq", "redrive")
    assert code == EXIT_USAGE and "give EXECUTION_IDs or --task ID" in err
    code, _, err = run("dlq", "redrive", "a", "--task", "t0001")
    assert code == EXIT_USAGE and "not both" in err
    code, _, err = run("dlq", "redrive", "nope")
    assert code == EXIT_SERVER and "not found" in err


def test_dlq_purge_needs_confirmation(
    run: Run, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(3):
        cluster.add_dead_letter("t0001", n)
    monkeypatch.setattr("sys.stdin", FakeStdin("", tty=False))
    code, out, err = run("dlq", "purge", "t0001-e0")
    assert code == EXIT_USAGE and out == ""
    assert "confirmation needed, but stdin is not a terminal: pass --yes" in err
    assert "PurgeDeadLetters" not in [m for _, m in cluster.store.calls]
    monkeypatch.setattr("sys.stdin", FakeStdin("n\n"))
    code, out, err = run("dlq", "purge", "t0001-e0")
    assert code == EXIT_SERVER and out == "" and "purge 1 dead letter(s): t0001-e0" in err
    assert "[y/N]" in err and "aborted: nothing was changed" in err and len(cluster.store.dead_letters) == 3
    monkeypatch.setattr("sys.stdin", FakeStdin("y\n"))
    code, out, _ = run("dlq", "purge", "t0001-e0")
    assert (
        code == EXIT_OK
        and out == "purged 1 dead letter(s)\n"
        and "t0001-e0" not in cluster.store.dead_letters
    )
    monkeypatch.setattr("sys.stdin", FakeStdin("", tty=False))
    doc = run.json("dlq", "purge", "--task", "t0001", "--before", "2025-06-15T15:08:00Z", "--yes")
    assert doc == {"purged": 1} and cluster.store.last("PurgeDeadLetters").before_ms == 1_750_000_080_000
    assert list(cluster.store.dead_letters) == ["t0001-e2"]
    run.json("dlq", "purge", "--task", "t0001", "--before=-1d", "--yes")
    assert cluster.store.last("PurgeDeadLetters").before_ms > 0
    code, _, err = run("dlq", "purge", "--yes")
    assert code == EXIT_USAGE and "give EXECUTION_IDs or --task ID" in err
    code, _, err = run("dlq", "purge", "--task", "t0001", "--before", "soon", "--yes")
    assert code == EXIT_USAGE and err.startswith("error: --before: ")


def test_task_cancel_by_filter(run: Run, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(4):
        team = "data" if i < 3 else "ops"
        run.json("task", "create", "--name", f"etl-{i}", "--every", "5m", "--tag", f"team={team}", "--", "x")
    run.json("task", "cancel", "t0001")
    monkeypatch.setattr("sys.stdin", FakeStdin("", tty=False))
    code, out, err = run("task", "cancel", "--tag", "team=data")
    assert code == EXIT_USAGE and out == "" and "cancel 2 task(s): t0002 (etl-1), t0003 (etl-2)" in err
    assert "pass --yes" in err
    docs = run.json("task", "cancel", "--tag", "team=data", "--name-prefix", "etl-", "--yes")
    assert [d["task_id"] for d in docs] == ["t0002", "t0003"] and all(d["state"] == "cancelled" for d in docs)
    assert run.json("task", "cancel", "--tag", "team=data", "--yes") == []  # nothing left to cancel
    monkeypatch.setattr("sys.stdin", FakeStdin("yes\n"))
    code, out, err = run("task", "cancel", "--state", "scheduled")
    assert code == EXIT_OK and "t0004" in out and "cancel 1 task(s): t0004 (etl-3)? [y/N]" in err
    code, _, err = run("task", "cancel")
    assert code == EXIT_USAGE and "give task ids, or filters" in err
    code, _, err = run("task", "cancel", "t0001", "--tag", "a=b")
    assert code == EXIT_USAGE and "not both" in err


def test_task_delete_by_id_and_by_filter(
    run: Run, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(4):
        team = "data" if i < 3 else "ops"
        run.json("task", "create", "--name", f"etl-{i}", "--every", "5m", "--tag", f"team={team}", "--", "x")
    cluster.add_execution("t0001", 0, state=common_pb2.EXECUTION_SUCCEEDED, attempt=1)
    cluster.add_execution("t0002", 0, state=common_pb2.EXECUTION_RUNNING, attempt=1)
    monkeypatch.setattr("sys.stdin", FakeStdin("", tty=False))
    code, out, err = run("task", "delete", "t0001")
    assert code == EXIT_USAGE and out == "" and "delete 1 task(s) with their history: t0001" in err
    assert "cannot be undone" in err and "pass --yes" in err
    docs = run.json("task", "delete", "t0001", "--yes")
    assert (
        docs == [{"task": docs[0]["task"], "executions_deleted": 1, "cleanup_pending": False}]
        and docs[0]["task"]["spec"]["name"] == "etl-0"
    )
    # A running execution refuses its task, naming it; --force terminates it.
    code, out, err = run("task", "delete", "--tag", "team=data", "--yes")
    assert code == EXIT_SERVER and "t0002: task t0002 has a running execution t0002-e0" in err
    assert "deleted t0003 (etl-2): 0 execution(s)" in out
    monkeypatch.setattr("sys.stdin", FakeStdin("y\n"))
    code, out, err = run("task", "delete", "--tag", "team=data", "--force")
    assert (
        code == EXIT_OK
        and "terminating running executions: t0002 (etl-1) (this cannot be undone)? [y/N]" in err
    )
    assert "deleted t0002 (etl-1): 1 execution(s)" in out
    monkeypatch.setattr("sys.stdin", FakeStdin("n\n"))
    code, _, err = run("task", "delete", "t0004")
    assert code == EXIT_SERVER and "aborted: nothing was changed" in err
    assert run.json("task", "get", "t0004")["spec"]["name"] == "etl-3"
    code, _, err = run("task", "delete", "t0009", "--yes")
    assert code == EXIT_SERVER and "t0009: task t0009 not found" in err
    code, _, err = run("task", "delete")
    assert code == EXIT_USAGE and "give task ids, or filters" in err


def test_retention_flags_on_create_and_update(run: Run, cluster: FakeCluster) -> None:
    doc = run.json(*HELLO[:-3], "--keep-executions", "50", "--retention", "14d", "--", "echo", "hello")
    assert doc["spec"]["retention"] == {
        "keep_executions": 50,
        "execution_max_age_ms": 14 * 86_400_000,
        "ended_task_max_age_ms": 0,
    }
    updated = run.json("task", "update", "t0001", "--ended-retention", "forever")
    assert updated["spec"]["retention"] == {
        "keep_executions": 50,
        "execution_max_age_ms": 14 * 86_400_000,
        "ended_task_max_age_ms": -1,
    }
    code, out, _ = run("task", "get", "t0001")
    assert "retention:" in out and "keep 50, executions 14d, ended task forever" in out
    assert run.json("task", "update", "t0001", "--reset-retention")["spec"]["retention"] is None
    code, _, err = run("task", "update", "t0001", "--keep-executions", "0")
    assert code == EXIT_USAGE and "--keep-executions: must be positive" in err
    code, _, err = run("task", "update", "t0001", "--reset-retention", "--retention", "1d")
    assert code == EXIT_USAGE and "do not combine it with --retention" in err


def test_execution_get_shows_attempts_retry_and_return_value(run: Run, cluster: FakeCluster) -> None:
    run.json(*HELLO)
    cluster.add_execution(
        "t0001",
        0,
        state=common_pb2.EXECUTION_PENDING,
        attempt=1,
        not_before_ms=1_750_000_090_000,
        return_value=b'{"rows": 3}',
        manual=True,
        attempts=[common_pb2.AttemptSummary(attempt=1, outcome=common_pb2.ATTEMPT_FAILED, exit_code=3)],
    )
    code, out, _ = run("execution", "get", "t0001-e0")
    assert code == EXIT_OK
    assert "retry_at:" in out and "2025-06-15T15:08:10Z" in out and '{"rows": 3}' in out
    assert "start_at:" not in out  # an attempt finished: not_before is a retry's backoff end
    assert "dead_lettered:" in out and "manual:" in out and "--- attempts ---\nATTEMPT" in out
    doc = run.json("execution", "get", "t0001-e0")
    assert set(doc) == EXECUTION_KEYS and doc["not_before"] == "2025-06-15T15:08:10.000Z"
    assert doc["attempts"][0]["outcome"] == "failed" and doc["return_value"] == '{"rows": 3}'


def test_execution_get_shows_when_a_fire_committed_ahead_starts(run: Run, cluster: FakeCluster) -> None:
    cluster.add_execution(
        "t0001", 0, state=common_pb2.EXECUTION_RUNNING, attempt=1, not_before_ms=1_750_000_090_000
    )
    code, out, _ = run("execution", "get", "t0001-e0")
    assert code == EXIT_OK
    assert "start_at:" in out and "2025-06-15T15:08:10Z" in out and "retry_at:" not in out


def test_execution_get_shows_no_retry_time_once_ended(run: Run, cluster: FakeCluster) -> None:
    # A succeeded execution keeps the not_before its fire held its start until: not a retry's time.
    cluster.add_execution(
        "t0001",
        0,
        state=common_pb2.EXECUTION_SUCCEEDED,
        attempt=1,
        not_before_ms=1_750_000_090_000,
        attempts=[common_pb2.AttemptSummary(attempt=1, outcome=common_pb2.ATTEMPT_SUCCEEDED)],
    )
    code, out, _ = run("execution", "get", "t0001-e0")
    assert code == EXIT_OK
    assert "retry_at:" not in out and "start_at:" not in out and "2025-06-15T15:08:10Z" not in out
    assert run.json("execution", "get", "t0001-e0")["not_before"] == "2025-06-15T15:08:10.000Z"
