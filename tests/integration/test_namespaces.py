"""Namespaces with real processes (issue 13): a TLS node with a token file whose principals hold roles per
namespace. A submitter of team-a cannot create in team-b, nor update, cancel or even see team-b's task
(NOT_FOUND, absent from lists); a reader of every namespace sees both with --all-namespaces; a task's
calendar is resolved in its own namespace; executions and dead letters are listed by namespace, and a
purge without a filter stays in one; schedctl --namespace and --all-namespaces work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cronraft.client import Client, at, command, cron, every, retry
from cronraft.client._pki import Leaf, init_pki
from cronraft.client._transport import Transport
from cronraft.errors import InvalidArgument, NotFound, PermissionDenied
from cronraft.proto.v1 import common_pb2
from cronraft.tokenfile import add_token

from .harness import Cluster, wait_for
from .test_security_transport import SecureCluster

pytestmark = pytest.mark.integration

WEEKEND = common_pb2.CalendarRule(weekdays=common_pb2.WeekdaySet(days=[6, 7]))
WORKDAYS = common_pb2.CalendarRule(weekdays=common_pb2.WeekdaySet(days=[1, 2, 3, 4, 5]))


def _cluster(tmp_path: Path) -> tuple[SecureCluster, dict[str, str], Path]:
    pki = tmp_path / "pki"
    init_pki(pki, [Leaf("node1", ("127.0.0.1",), server=True), Leaf("client"), Leaf("w1")])
    tokens_file = tmp_path / "tokens.toml"
    now_ms = int(time.time() * 1000)
    roles = {
        "alice": ["submitter@team-a"],
        "bob": ["operator@team-b"],
        "olga": ["operator@team-a"],
        "rita": ["reader"],  # every namespace
        "admin": ["admin"],
        "w1": ["worker"],
    }
    tokens = {name: add_token(tokens_file, name, r, now_ms=now_ms) for name, r in roles.items()}
    tls = (
        f'[tls]\ncert = "{pki / "node1.pem"}"\nkey = "{pki / "node1-key.pem"}"\n\n'
        f'[auth]\ntoken_file = "{tokens_file}"\n'
    )
    c = SecureCluster(tmp_path, n=1, extra_toml=tls)
    c.admin = Transport(ca=(pki / "ca.pem").read_bytes(), token=tokens["admin"])
    return c, tokens, pki / "ca.pem"


def _client(c: Cluster, ca: Path, token: str, namespace: str = "default") -> Client:
    return Client(
        c.servers, timeout_s=10, transport=Transport(ca=ca.read_bytes(), token=token), namespace=namespace
    )


def _weekdays(fires: list[common_pb2.PreviewFire] | object) -> set[int]:
    """ISO weekdays of the fires that fire (actual_ms set)."""
    return {
        datetime.fromtimestamp(f.actual_ms / 1000, UTC).isoweekday()
        for f in fires  # type: ignore[attr-defined]
        if f.actual_ms
    }


def test_namespaces_separate_what_principals_see_and_do(tmp_path: Path, clusters: list[Cluster]) -> None:
    c, tokens, ca = _cluster(tmp_path)
    clusters.append(c)
    c.start()
    alice = _client(c, ca, tokens["alice"], "team-a")
    olga = _client(c, ca, tokens["olga"], "team-a")
    bob = _client(c, ca, tokens["bob"], "team-b")
    rita = _client(c, ca, tokens["rita"])

    # One calendar name in each namespace, with opposite rules; a task's calendar is its namespace's.
    olga.put_calendar(common_pb2.Calendar(name="hol", exclude=[WEEKEND]))
    bob.put_calendar(common_pb2.Calendar(name="hol", exclude=[WORKDAYS]))
    bob.put_calendar(common_pb2.Calendar(name="only-b", exclude=[WEEKEND]))
    noon = cron("0 12 * * *")
    with pytest.raises(InvalidArgument, match="no calendar named 'only-b' in namespace team-a"):
        alice.create_task_spec(_spec("x", noon, calendars=["only-b"]))
    a = alice.create_task_spec(_spec("job-a", noon, calendars=["hol"]))
    b = bob.create_task_spec(_spec("job-b", noon, calendars=["hol"]))
    assert a.spec.namespace == "team-a" and b.spec.namespace == "team-b"
    assert _weekdays(alice.preview_task(a.task_id, count=14)) <= {1, 2, 3, 4, 5}
    assert _weekdays(bob.preview_task(b.task_id, count=14)) <= {6, 7}

    # alice (submitter of team-a): team-b is out of reach, and its task does not exist for her.
    with pytest.raises(PermissionDenied, match=r"needs role submitter .* in namespace team-b"):
        _client(c, ca, tokens["alice"], "team-b").create_task("x", every("1h"), command("true"))
    for call in (
        lambda: alice.get_task(b.task_id),
        lambda: alice.update_task(b.task_id, _spec("moved", every("1h"))),
        lambda: alice.cancel_task(b.task_id),
        lambda: alice.pause_task(b.task_id),
        lambda: alice.trigger_task(b.task_id),
        lambda: list(alice.list_executions(b.task_id)),
    ):
        with pytest.raises(NotFound, match=f"task {b.task_id} not found"):
            call()
    assert [t.task_id for t in alice.list_tasks()] == [a.task_id]
    with pytest.raises(PermissionDenied):
        list(alice.list_tasks(namespace="team-b"))
    with pytest.raises(PermissionDenied, match="all namespaces"):
        list(alice.list_tasks(all_namespaces=True))
    with pytest.raises(PermissionDenied):
        alice.get_calendar("hol", namespace="team-b")
    # Bulk cancel by filter stays in alice's namespace: team-b's job-* is untouched.
    done = alice.cancel_tasks_where(name_prefix="job-")
    assert list(done.results) == [a.task_id] and not done.errors
    assert bob.get_task(b.task_id).state == common_pb2.TASK_SCHEDULED

    # rita reads everything, with all_namespaces, and changes nothing.
    both = {t.task_id: t.spec.namespace for t in rita.list_tasks(all_namespaces=True)}
    assert both == {a.task_id: "team-a", b.task_id: "team-b"}
    assert [t.task_id for t in rita.list_tasks()] == []  # the default namespace is empty
    assert sorted(cal.namespace for cal in rita.list_calendars(all_namespaces=True)) == [
        "team-a",
        "team-b",
        "team-b",
    ]
    with pytest.raises(PermissionDenied):  # she sees it, so PERMISSION_DENIED rather than NOT_FOUND
        rita.cancel_task(b.task_id)

    # Executions and dead letters: a failing command with a retry policy and one attempt, per namespace.
    c.start_worker("w1", extra_args=("--tls-ca", str(ca)), env={"CRONRAFT_TOKEN": tokens["w1"]})
    now = int(time.time() * 1000)
    fail_a = olga.create_task("fail-a", at(now), command("false"), max_attempts=1, retry=retry("1s"))
    fail_b = bob.create_task("fail-b", at(now), command("false"), max_attempts=1, retry=retry("1s"))
    wait_for(lambda: len(list(rita.list_dead_letters(all_namespaces=True))) == 2, 60, "two dead letters")
    (letter_a,) = alice.list_dead_letters()
    (letter_b,) = bob.list_dead_letters()
    assert (letter_a.task_id, letter_a.namespace) == (fail_a.task_id, "team-a")
    assert (letter_b.task_id, letter_b.namespace) == (fail_b.task_id, "team-b")
    (exec_a,) = alice.list_executions(fail_a.task_id)
    assert exec_a.namespace == "team-a"
    for call in (
        lambda: alice.get_execution(letter_b.execution_id),
        lambda: alice.get_dead_letter(letter_b.execution_id),
        lambda: alice.get_execution_logs(letter_b.execution_id),
    ):
        with pytest.raises(NotFound):
            call()
    with pytest.raises(PermissionDenied, match="needs role operator"):  # submitters do not purge
        alice.purge_dead_letters(task_id=fail_a.task_id)
    # By ids, another namespace's id is skipped as an unknown one would be: only team-b's is purged.
    assert bob.purge_dead_letters([letter_a.execution_id, letter_b.execution_id]) == 1
    assert [d.execution_id for d in rita.list_dead_letters(all_namespaces=True)] == [letter_a.execution_id]

    # schedctl: --namespace (or $CRONRAFT_NAMESPACE) and --all-namespaces with a NAMESPACE column.
    env = {**os.environ, "CRONRAFT_SERVER": c.servers, "CRONRAFT_TLS_CA": str(ca)}
    env.pop("CRONRAFT_NAMESPACE", None)

    def schedctl(token: str, *argv: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cronraft.client.cli", "--token", token, *argv],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    listed = schedctl(tokens["rita"], "--namespace", "team-b", "task", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert [(d["task_id"], d["namespace"]) for d in json.loads(listed.stdout)] == [
        (b.task_id, "team-b"),
        (fail_b.task_id, "team-b"),
    ]
    table = schedctl(tokens["rita"], "task", "list", "--all-namespaces")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:2] == ["NAMESPACE", "TASK_ID"]
    assert {r.split()[0] for r in rows} == {"team-a", "team-b"}
    created = schedctl(
        tokens["alice"],
        "task",
        "create",
        "--name",
        "via-env",
        "--every",
        "1h",
        "-o",
        "json",
        "--",
        "true",
        CRONRAFT_NAMESPACE="team-a",
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["namespace"] == "team-a"
    refused = schedctl(
        tokens["alice"], "-n", "team-b", "task", "create", "--name", "x", "--every", "1h", "--", "true"
    )
    assert refused.returncode == 4 and "in namespace team-b" in refused.stderr
    hidden = schedctl(tokens["alice"], "task", "get", b.task_id)
    assert hidden.returncode != 0 and "not found" in hidden.stderr
    for client in (alice, olga, bob, rita):
        client.close()


def _spec(
    name: str, schedule: common_pb2.Schedule, *, calendars: list[str] | None = None
) -> common_pb2.TaskSpec:
    spec = common_pb2.TaskSpec(name=name, schedule=schedule)
    spec.schedule.calendars.extend(calendars or [])
    spec.payload.command.argv.append("true")
    return spec
