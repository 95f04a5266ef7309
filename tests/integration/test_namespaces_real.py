"""Namespaces and roles with the semantics running, on three real nodes with TLS and tokens.

What docs/security.md ("Roles", "Namespaces") promises, checked while tasks of two namespaces fire every
second on two workers: a viewer (reader) of team-a cannot trigger, pause, resume, cancel, back-fill,
edit, create, import, cancel a run, redrive or purge, and a submitter cannot do the operator's part; a
principal of team-a cannot see or touch team-b's tasks, executions, fire ledgers, statistics, dead
letters, calendars or logs (by id, on a follower too, by name through schedctl, in lists and searches
whatever their filter), its bulk calls (cancel and delete by filter or by ids, import, cancel of runs,
purge and redrive by ids, purge of the whole queue) stay in its namespace, `depends_on` names tasks of the
task's own namespace only (create, import, update; an admin's too), and a calendar in use holds in its own
namespace. Each refusal is checked for its gRPC status (the SDK's error class, schedctl's exit code) and
its words, then that nothing changed (read on the leader): the tasks' state, spec and pause note, their
fires going on, no manual run, the letters, calendars and task names as they were, no audit record.

Workers are bound to namespaces (docs/security.md, "Workers"): wa's token holds `worker` in team-a only
and serves team-a's queue, wb's in team-b only and serves team-b's; each payload ran on its own queue's
worker (by the API, and by the payload's own stamp of the worker process above it). A team-b task naming
team-a's queue is not run on wa: it waits, saying that no worker serves team-b on that queue, until a
worker of team-b (wc) serves the queue too, and team-a's runs stay on wa. A failure notifies the notifier
its task names, with its own task's ids.

The module's tests share one cluster and run in file order: the bulk test purges team-a's letters, which
the tests before it read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from cronraft.client import Client, at, command, cron, every, notifier, retry
from cronraft.client._pki import Leaf, init_pki
from cronraft.client._transport import Transport
from cronraft.errors import CronraftError, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from cronraft.proto.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc
from cronraft.tokenfile import add_token

from .harness import Cluster, wait_for
from .semantics import now_ms
from .test_security_transport import SecureCluster

pytestmark = pytest.mark.integration

SCHEDULED = common_pb2.TASK_SCHEDULED
SUCCEEDED = common_pb2.EXECUTION_SUCCEEDED
WEEKEND = common_pb2.CalendarRule(weekdays=common_pb2.WeekdaySet(days=[6, 7]))
WORKDAYS = common_pb2.CalendarRule(weekdays=common_pb2.WeekdaySet(days=[1, 2, 3, 4, 5]))
ROLES = {
    "alice": "submitter@team-a",
    "olga": "operator@team-a",
    "vera": "reader@team-a",  # the viewer
    "bob": "operator@team-b",
    "rita": "reader",  # every namespace
    "root": "admin",
    "wa": "worker@team-a",  # leased team-a's executions only
    "wb": "worker@team-b",
    "wc": "worker@team-b",  # started by the last test, on team-a's queue
}
NAMESPACE = {"alice": "team-a", "olga": "team-a", "vera": "team-a", "bob": "team-b"}

# A payload: append "<label> <task id> <execution id> <worker pid>" to the stamps file, then exit with the
# given code. Its parent is the worker's guard process (client/_process_runner.py), whose parent is the
# worker process that started it.
_STAMP = (
    "import os, sys\n"
    "guard = open(f'/proc/{os.getppid()}/stat').read().rsplit(')', 1)[1].split()\n"
    "with open(sys.argv[1], 'a') as f:\n"
    "    f.write(' '.join([sys.argv[2], os.environ['CRONRAFT_TASK_ID'], os.environ['CRONRAFT_EXECUTION_ID'],"
    " guard[1]]) + chr(10))\n"
    "sys.exit(int(sys.argv[3]))\n"
)
# A notifier: append its JSON body (stdin) as one line to a file.
_NOTE = "import json, sys; b = json.load(sys.stdin); open(sys.argv[1], 'a').write(json.dumps(b) + chr(10))"


@dataclass
class Side:
    """One namespace's objects."""

    tick: str = ""  # every second, on its own queue
    fail: str = ""  # failed once: a dead letter (its execution `letter`)
    letter: str = ""
    spare: str = ""  # a second dead-lettered task, for the bulk purge (its execution `spare_letter`)
    spare_letter: str = ""
    only: str = ""  # team-b: a task whose name ("b-only") team-a has none of


@dataclass
class World:
    cluster: SecureCluster
    root: Path
    ca: Path
    tokens: dict[str, str]
    stamps: Path
    notes: dict[str, Path]
    a: Side = field(default_factory=Side)
    b: Side = field(default_factory=Side)

    def client(self, who: str, namespace: str | None = None, servers: str | None = None) -> Client:
        transport = Transport(ca=self.ca.read_bytes(), token=self.tokens[who])
        ns = namespace or NAMESPACE.get(who, "default")
        return Client(servers or self.cluster.servers, timeout_s=20, transport=transport, namespace=ns)


def _stamp(w: World, label: str, code: int = 0) -> common_pb2.Payload:
    return command(sys.executable, "-c", _STAMP, str(w.stamps), label, str(code))


def _start(root: Path, module_clusters: list[Cluster]) -> World:
    pki = root / "pki"
    init_pki(pki, [Leaf("node", ("127.0.0.1",), server=True), Leaf("client")])
    tokens_file = root / "tokens.toml"
    t0 = now_ms()
    tokens = {who: add_token(tokens_file, who, [role], now_ms=t0) for who, role in ROLES.items()}
    notes = {ns: root / f"notified-{ns}.jsonl" for ns in ("team-a", "team-b")}
    notifiers = ""
    for ns, path in notes.items():
        argv = json.dumps([sys.executable, "-c", _NOTE, str(path)])
        notifiers += f'[notifiers.page-{ns[-1]}]\nkind = "command"\nargv = {argv}\n'
    toml = (
        f'[tls]\ncert = "{pki / "node.pem"}"\nkey = "{pki / "node-key.pem"}"\nca = "{pki / "ca.pem"}"\n\n'
        f'[auth]\ntoken_file = "{tokens_file}"\n\n{notifiers}'
    )
    (root / "cluster").mkdir()
    c = SecureCluster(root / "cluster", n=3, extra_toml=toml)
    c.admin = Transport(ca=(pki / "ca.pem").read_bytes(), token=tokens["root"])
    module_clusters.append(c)
    c.start()
    for worker, queue in (("wa", "qa"), ("wb", "qb")):
        args = ("--tls-ca", str(pki / "ca.pem"), "--queue", queue)
        c.start_worker(worker, capacity=4, extra_args=args, env={"CRONRAFT_TOKEN": tokens[worker]})

    def connected() -> bool:
        lead = c.leader()
        return lead is not None and c.status_of(lead).connected_workers >= 2

    wait_for(connected, 30, "workers wa and wb connected")
    return World(c, root, pki / "ca.pem", tokens, root / "stamps", notes)


def _populate(w: World) -> None:
    """Calendars, ticking tasks, and two dead letters in each namespace."""
    with w.client("olga") as olga, w.client("bob") as bob:
        for who, side, label, queue, rule in (
            (olga, w.a, "A", "qa", WEEKEND),
            (bob, w.b, "B", "qb", WORKDAYS),
        ):
            who.put_calendar(common_pb2.Calendar(name="hol", exclude=[rule]))
            who.put_calendar(common_pb2.Calendar(name="spare"))
            shared = {"team": "shared"}  # one tag on every task of both: a filter must not cross over
            side.tick = who.create_task(
                "tick", every("1s"), _stamp(w, label), queue=queue, tags=shared
            ).task_id
            page = notifier(f"page-{label.lower()}", ["failure"])
            failing = {"max_attempts": 1, "retry": retry("1s"), "queue": queue, "tags": shared}
            side.fail = who.create_task(
                "fail", at(now_ms()), _stamp(w, label, 3), notify=[page], **failing
            ).task_id
            side.spare = who.create_task("spare-fail", at(now_ms()), _stamp(w, label, 3), **failing).task_id
        bob.put_calendar(common_pb2.Calendar(name="only-b"))
        w.b.only = bob.create_task("b-only", every("1h"), command("true"), queue="qb").task_id

    with w.client("rita") as rita:

        def letters() -> dict[str, str] | None:
            found = {d.task_id: d.execution_id for d in rita.list_dead_letters(all_namespaces=True)}
            return found if len(found) == 4 else None

        found = wait_for(letters, 30, "four dead letters")
    for side in (w.a, w.b):
        side.letter, side.spare_letter = found[side.fail], found[side.spare]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, module_clusters: list[Cluster]) -> World:
    root = tmp_path_factory.mktemp("namespaces-real")
    try:
        w = _start(root, module_clusters)
        _populate(w)
    except BaseException:
        for c in module_clusters:
            print(c.logs())
        raise
    return w


@pytest.fixture
def clients(world: World) -> Iterator[dict[str, Client]]:
    made = {who: world.client(who) for who in ("alice", "olga", "vera", "bob")}
    # The observers read the leader: a follower answers reads from its own store, which may not hold the
    # newest writes yet (a change it has not applied would read as "nothing changed"). The module kills
    # no node: the leader stays.
    leader = world.cluster.wait_leader().grpc_address
    made["rita"] = world.client("rita", servers=leader)
    made["root"] = world.client("root", servers=leader)
    yield made
    for c in made.values():
        c.close()


# -- what "nothing changed" is ----------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """What a refused call must leave as it was, read by a principal who sees it (rita: every namespace)."""

    tasks: dict[str, tuple[int, bytes, str]]  # task id -> (state, spec, pause note); a fire bumps versions
    manual: frozenset[str]  # manual executions of those tasks
    letters: frozenset[str]
    calendars: frozenset[tuple[str, str]]
    names: frozenset[tuple[str, str]]  # (namespace, task name) of every task


def _snapshot(rita: Client, task_ids: list[str], namespace: str | None = None) -> Snapshot:
    """`task_ids`, and the letters, calendars and task names of `namespace` (None: of every one)."""
    tasks = {t: rita.get_task(t) for t in task_ids}
    manual = frozenset(e.execution_id for t in task_ids for e in rita.list_executions(t) if e.manual)
    every_one = namespace is None
    return Snapshot(
        {t: (x.state, x.spec.SerializeToString(deterministic=True), x.pause_note) for t, x in tasks.items()},
        manual,
        frozenset(
            d.execution_id for d in rita.list_dead_letters(namespace=namespace, all_namespaces=every_one)
        ),
        frozenset(
            (c.namespace, c.name) for c in rita.list_calendars(namespace=namespace, all_namespaces=every_one)
        ),
        frozenset(
            (t.spec.namespace, t.spec.name)
            for t in rita.list_tasks(namespace=namespace, all_namespaces=every_one)
        ),
    )


def _fires_after(rita: Client, task_id: str, since_ms: int) -> None:
    """The task still fires (every second) and its runs succeed: an execution of a later nominal time ends
    succeeded."""

    def fired() -> bool:
        return any(
            e.nominal_time_ms > since_ms and e.state == common_pb2.EXECUTION_SUCCEEDED
            for e in rita.list_executions(task_id)
        )

    wait_for(fired, 15, f"task {task_id} to fire and succeed after {since_ms}")


def _refused(error: type[CronraftError], message: str, calls: list[tuple[str, Callable[[], Any]]]) -> None:
    """Each call raises `error` (the gRPC status it stands for) with `message` ({method} filled in)."""
    for method, call in calls:
        with pytest.raises(error) as err:
            call()
        expected = message.format(method=method)
        assert expected in str(err.value), (method, str(err.value))


def _raw_purge(w: World, who: str, namespace: str) -> scheduler_pb2.PurgeDeadLettersResponse:
    """PurgeDeadLetters with neither ids nor a task: every letter of `namespace` (the SDK's purge names
    ids or a task; the dashboard's "purge all" sends this), on the leader."""
    lead = w.cluster.wait_leader()
    with Transport(ca=w.ca.read_bytes(), token=w.tokens[who]).channel(lead.grpc_address) as ch:
        request = scheduler_pb2.PurgeDeadLettersRequest(namespace=namespace, request_id=f"purge-{who}")
        response: scheduler_pb2.PurgeDeadLettersResponse = scheduler_pb2_grpc.SchedulerStub(
            ch
        ).PurgeDeadLetters(request, timeout=10)
        return response


# -- roles ---------------------------------------------------------------------------------------------


def test_a_viewer_and_a_submitter_change_nothing_they_may_not(
    world: World, clients: dict[str, Client]
) -> None:
    vera, alice, rita, root = clients["vera"], clients["alice"], clients["rita"], clients["root"]
    a = world.a
    before = _snapshot(rita, [a.tick, a.fail])
    (run,) = [e.execution_id for e in rita.list_executions(a.fail)]
    refused_at = now_ms()
    spec = common_pb2.TaskSpec(name="vera-x", schedule=every("1h"))
    spec.payload.command.argv.append("true")
    _refused(
        PermissionDenied,
        # Held in no namespace: refused by the interceptor, before the servicer looks at the task.
        "{method} needs role submitter (or one above it) in some namespace; vera has reader in team-a",
        [
            ("TriggerTask", lambda: vera.trigger_task(a.tick)),
            ("PauseTask", lambda: vera.pause_task(a.tick, "no")),
            ("ResumeTask", lambda: vera.resume_task(a.tick)),
            ("CancelTask", lambda: vera.cancel_task(a.tick)),
            ("BackfillTask", lambda: vera.backfill_task(a.tick, refused_at - 60_000, refused_at)),
            ("UpdateTask", lambda: vera.edit_task(a.tick, name="renamed")),
            ("CancelExecution", lambda: vera.cancel_execution(run)),
            ("CreateTask", lambda: vera.create_task_spec(spec)),
            ("ImportTasks", lambda: vera.import_tasks([spec])),
        ],
    )
    for who, name, holds in ((vera, "vera", "reader"), (alice, "alice", "submitter")):
        _refused(
            PermissionDenied,
            "{method} needs role operator (or one above it) in some namespace; "
            + f"{name} has {holds} in team-a",
            [
                ("RedriveDeadLetters", lambda c=who: c.redrive_dead_letters([a.letter])),
                ("RedriveDeadLetters", lambda c=who: c.redrive_dead_letters(task_id=a.fail)),
                ("PurgeDeadLetters", lambda c=who: c.purge_dead_letters([a.letter])),
                ("PurgeDeadLetters", lambda c=who: c.purge_dead_letters(task_id=a.fail)),
                ("DeleteTask", lambda c=who: c.delete_task(a.tick)),
                ("PutCalendar", lambda c=who: c.put_calendar(common_pb2.Calendar(name="spare"))),
                ("DeleteCalendar", lambda c=who: c.delete_calendar("spare")),
            ],
        )
        # The namespace's whole queue (no ids, no task: the SDK always names one; the dashboard does not).
        with pytest.raises(grpc.RpcError) as rpc:
            _raw_purge(world, name, "team-a")
        assert rpc.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"PurgeDeadLetters needs role operator (or one above it) in some namespace; {name}" in str(
            rpc.value.details()
        )
    # Nothing changed: the same tasks, versions, letters and calendars, no manual run, nothing proposed
    # (no audit record of vera's), and the task goes on firing as before.
    assert _snapshot(rita, [a.tick, a.fail]) == before
    assert root.list_audit(principal="vera", limit=None) == []
    _fires_after(rita, a.tick, refused_at)


# -- another namespace: not seen ----------------------------------------------------------------------


def test_another_namespaces_objects_are_not_seen(world: World, clients: dict[str, Client]) -> None:
    alice, olga, rita = clients["alice"], clients["olga"], clients["rita"]
    a, b = world.a, world.b
    (run_b,) = [e.execution_id for e in rita.list_executions(b.fail)]
    ran_b = wait_for(
        lambda: next((e.execution_id for e in rita.list_executions(b.tick) if e.state == SUCCEEDED), None),
        15,
        "a run of team-b's tick that succeeded",
    )
    # By id, team-b's objects do not exist for team-a's principals: the words a missing one gets; on a
    # follower (which answers reads from its own store) as on the leader.
    lead = world.cluster.wait_leader()
    follower = next(n for n in world.cluster.nodes if n is not lead)
    on_follower = Client(
        follower.grpc_address,
        timeout_s=20,
        transport=Transport(ca=world.ca.read_bytes(), token=world.tokens["alice"]),
        namespace="team-a",
    )
    for who in (alice, olga, on_follower):
        _refused(
            NotFound,
            f"task {b.tick} not found",
            [
                ("GetTask", lambda c=who: c.get_task(b.tick)),
                ("ExplainTask", lambda c=who: c.explain_task(b.tick, from_=1)),  # the fire ledger
                ("PreviewTask", lambda c=who: c.preview_task(b.tick)),
                ("GetTaskStats", lambda c=who: c.get_task_stats(b.tick)),
                ("ListExecutions", lambda c=who: list(c.list_executions(b.tick))),
                ("ListExecutions", lambda c=who: list(c.search_executions(task_id=b.tick))),
            ],
        )
        _refused(
            NotFound,
            f"task {b.fail} not found",
            [("ListDeadLetters", lambda c=who: list(c.list_dead_letters(task_id=b.fail)))],
        )
        for run in (run_b, ran_b):
            _refused(
                NotFound,
                f"execution {run} not found",
                [
                    ("GetExecution", lambda c=who, r=run: c.get_execution(r)),
                    ("GetExecutionLogs", lambda c=who, r=run: c.get_execution_logs(r)),
                    ("GetExecutionResult", lambda c=who, r=run: c.get_execution_result(r)),
                ],
            )
        _refused(
            NotFound,
            f"no dead letter for execution {b.letter}",
            [("GetDeadLetter", lambda c=who: c.get_dead_letter(b.letter))],
        )
        # A calendar name is looked up in the caller's namespace: team-b's is missing there.
        _refused(
            NotFound,
            "calendar 'only-b' not found in namespace team-a",
            [("GetCalendar", lambda c=who: c.get_calendar("only-b"))],
        )
    on_follower.close()
    # Lists and searches: team-b, or every namespace, are refused by name; the own namespace holds
    # nothing of team-b's, whatever the filter (a name, team-b's worker, a state).
    _refused(
        PermissionDenied,
        "{method} needs role reader (or one above it) in namespace team-b; alice has submitter in team-a",
        [
            ("ListTasks", lambda: list(alice.list_tasks(namespace="team-b"))),
            ("ListExecutions", lambda: list(alice.search_executions(namespace="team-b"))),
            ("ListDeadLetters", lambda: list(alice.list_dead_letters(namespace="team-b"))),
            ("ListCalendars", lambda: alice.list_calendars(namespace="team-b")),
            ("GetCalendar", lambda: alice.get_calendar("hol", namespace="team-b")),
        ],
    )
    _refused(
        PermissionDenied,
        '{method} over all namespaces needs role reader (or one above it) in namespace "*"',
        [
            ("ListTasks", lambda: list(alice.list_tasks(all_namespaces=True))),
            ("ListExecutions", lambda: list(alice.search_executions(all_namespaces=True))),
            ("ListDeadLetters", lambda: list(alice.list_dead_letters(all_namespaces=True))),
            ("ListCalendars", lambda: alice.list_calendars(all_namespaces=True)),
        ],
    )
    own_tasks = {t.task_id for t in alice.list_tasks()}
    assert own_tasks >= {a.tick, a.fail, a.spare} and not own_tasks & {b.tick, b.fail, b.spare}
    # Each filter reads another index (raft.search): none of them crosses into team-b.
    t = now_ms()
    for where, found in {
        "name": alice.list_tasks(name_prefix="tick"),
        "tag": alice.list_tasks(tags={"team": "shared"}),
        "state": alice.list_tasks(state=SCHEDULED),
        "kind": alice.list_tasks(kind="fixed_rate"),
        "next fire": alice.list_tasks(next_after=t - 5_000, next_before=t + 5_000),
        "last outcome": alice.list_tasks(last_outcomes=[common_pb2.EXECUTION_FAILED]),
    }.items():
        ids = {x.task_id for x in found}
        assert ids and ids <= own_tasks, (where, ids)
    for where, runs in {
        "every": alice.search_executions(page_size=1000),
        "tag": alice.search_executions(tags={"team": "shared"}),
        "state": alice.search_executions(states=[common_pb2.EXECUTION_FAILED]),
        "since": alice.search_executions(since=t - 60_000),
        "ended": alice.search_executions(since=t - 60_000, by_completed=True),
        "worker": alice.search_executions(worker_id="wa"),
    }.items():
        got = list(runs)
        assert got and {e.task_id for e in got} <= own_tasks, where
        assert {e.namespace for e in got} == {"team-a"}, where
    assert list(alice.search_executions(worker_id="wb")) == []  # wb runs team-b's queue only
    failed = list(alice.search_executions(states=[common_pb2.EXECUTION_FAILED]))
    assert {e.task_id for e in failed} == {a.fail, a.spare}
    with pytest.raises(
        PermissionDenied, match=r'GetClusterStats over all namespaces needs role reader .* "\*"'
    ):
        alice.cluster_stats()
    assert {(d.execution_id, d.namespace) for d in alice.list_dead_letters()} == {
        (a.letter, "team-a"),
        (a.spare_letter, "team-a"),
    }
    assert sorted((c.namespace, c.name) for c in alice.list_calendars()) == [
        ("team-a", "hol"),
        ("team-a", "spare"),
    ]
    # The same name is two calendars: each namespace's task is planned by its own (weekends off in
    # team-a, workdays off in team-b).
    assert alice.get_calendar("hol").exclude[0] == WEEKEND
    assert rita.get_calendar("hol", namespace="team-b").exclude[0] == WORKDAYS
    # rita reads every namespace: she sees both sides (the refusals above are about alice's roles).
    assert {b.tick, a.tick} <= {t.task_id for t in rita.list_tasks(all_namespaces=True)}
    assert rita.get_dead_letter(b.letter).namespace == "team-b"


# -- another namespace: not touched -------------------------------------------------------------------


def test_another_namespaces_objects_are_not_touched(world: World, clients: dict[str, Client]) -> None:
    olga, rita, root = clients["olga"], clients["rita"], clients["root"]
    b = world.b
    before = _snapshot(rita, [b.tick, b.fail, b.spare])
    (run_b,) = [e.execution_id for e in rita.list_executions(b.fail)]
    refused_at = now_ms()
    spec = common_pb2.TaskSpec(name="moved", schedule=every("1h"))
    spec.payload.command.argv.append("true")
    # olga is an operator of team-a: every write on team-b's task is answered as for a missing task.
    _refused(
        NotFound,
        f"task {b.tick} not found",
        [
            ("UpdateTask", lambda: olga.update_task(b.tick, spec)),
            ("UpdateTask", lambda: olga.edit_task(b.tick, name="moved")),
            ("PauseTask", lambda: olga.pause_task(b.tick, "mine now")),
            ("ResumeTask", lambda: olga.resume_task(b.tick)),
            ("TriggerTask", lambda: olga.trigger_task(b.tick)),
            ("BackfillTask", lambda: olga.backfill_task(b.tick, refused_at - 60_000, refused_at)),
            ("CancelTask", lambda: olga.cancel_task(b.tick)),
            ("DeleteTask", lambda: olga.delete_task(b.tick, force=True)),
        ],
    )
    _refused(
        NotFound,
        f"task {b.fail} not found",
        [
            ("RedriveDeadLetters", lambda: olga.redrive_dead_letters(task_id=b.fail)),
            ("PurgeDeadLetters", lambda: olga.purge_dead_letters(task_id=b.fail)),
        ],
    )
    _refused(
        NotFound, f"execution {run_b} not found", [("CancelExecution", lambda: olga.cancel_execution(run_b))]
    )
    # By ids, team-b's letter is skipped as an unknown id is: nothing redriven, nothing purged.
    assert olga.redrive_dead_letters([b.letter]) == []
    assert olga.purge_dead_letters([b.letter]) == 0
    # Through a follower, which relays writes to the leader with olga's token: the same answer.
    lead = world.cluster.wait_leader()
    follower = next(n for n in world.cluster.nodes if n is not lead)
    transport = Transport(ca=world.ca.read_bytes(), token=world.tokens["olga"])
    with Client(follower.grpc_address, timeout_s=20, transport=transport, namespace="team-a") as via:
        _refused(
            NotFound,
            f"task {b.tick} not found",
            [("PauseTask", lambda: via.pause_task(b.tick)), ("DeleteTask", lambda: via.delete_task(b.tick))],
        )
    # Calendars: team-b's are out of reach by name, and a calendar of team-a cannot include one of them.
    denied = "{method} needs role operator (or one above it) in namespace team-b; olga has operator in team-a"
    _refused(
        PermissionDenied,
        denied,
        [
            ("DeleteCalendar", lambda: olga.delete_calendar("only-b", namespace="team-b")),
            (
                "PutCalendar",
                lambda: olga.put_calendar(common_pb2.Calendar(name="only-b", namespace="team-b")),
            ),
        ],
    )
    with pytest.raises(InvalidArgument, match="only-b"):
        olga.put_calendar(common_pb2.Calendar(name="inc", include=["only-b"]))
    # Nothing of team-b changed, nothing was proposed against it, and its task fires on.
    assert _snapshot(rita, [b.tick, b.fail, b.spare]) == before
    assert rita.get_execution(run_b).state == common_pb2.EXECUTION_FAILED
    touched = {b.tick, b.fail, b.spare, b.letter, run_b, "only-b"}
    assert [r for r in root.list_audit(principal="olga", limit=None) if touched & set(r.target_ids)] == []
    _fires_after(rita, b.tick, refused_at)


# -- names (schedctl) -----------------------------------------------------------------------------------


def _schedctl(w: World, who: str, *argv: str) -> subprocess.Popen[str]:
    env = {**os.environ, "CRONRAFT_SERVER": w.cluster.servers, "CRONRAFT_TLS_CA": str(w.ca)}
    env["CRONRAFT_TOKEN"] = w.tokens[who]
    env.pop("CRONRAFT_NAMESPACE", None)
    return subprocess.Popen(
        [sys.executable, "-m", "cronraft.client.cli", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_names_resolve_in_the_callers_namespace_only(world: World, clients: dict[str, Client]) -> None:
    """schedctl takes a task's name where it takes an id (client/cli/task_names.py), looked up in the
    client's namespace: team-b's names are unknown in team-a, and team-b is not listed for alice."""
    rita = clients["rita"]
    a, b = world.a, world.b
    (run_b,) = [e.execution_id for e in rita.list_executions(b.fail)]
    before = _snapshot(rita, [a.tick, b.tick, b.fail, b.only])
    refused_at = now_ms()
    # (principal, argv, exit code, what stderr says); run at once (each is a Python process). "tick" and
    # "spare-fail" name a task in each namespace; "b-only" one in team-b only.
    cases = [
        ("alice", ["-n", "team-a", "-o", "json", "task", "get", "tick"], 0, ""),
        ("olga", ["-n", "team-a", "-o", "json", "dlq", "list", "--task", "spare-fail"], 0, ""),
        (
            "alice",
            ["-n", "team-a", "task", "pause", "b-only"],
            1,
            "no task named 'b-only' in namespace 'team-a'",
        ),
        (
            "alice",
            ["-n", "team-b", "task", "pause", "tick"],
            4,
            "ListTasks needs role reader (or one above it) in namespace team-b; "
            "alice has submitter in team-a",
        ),
        ("alice", ["task", "explain", b.tick], 1, f"task {b.tick} not found"),
        ("alice", ["logs", run_b], 1, f"execution {run_b} not found"),
        ("vera", ["-n", "team-a", "task", "trigger", "tick"], 4, "TriggerTask needs role submitter"),
    ]
    procs = [(who, argv, code, said, _schedctl(world, who, *argv)) for who, argv, code, said in cases]
    outputs = []
    for who, argv, code, said, proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == code, (who, argv, proc.returncode, err)
        assert said in err, (who, argv, err)
        outputs.append(out)
    # The names resolved to team-a's own tasks.
    assert json.loads(outputs[0])["task_id"] == a.tick
    assert [d["execution_id"] for d in json.loads(outputs[1])] == [a.spare_letter]
    after = _snapshot(rita, [a.tick, b.tick, b.fail, b.only])
    assert after == before
    _fires_after(rita, b.tick, refused_at)


# -- bulk -----------------------------------------------------------------------------------------------


def _hourly_spec(name: str, namespace: str = "") -> common_pb2.TaskSpec:
    spec = common_pb2.TaskSpec(name=name, namespace=namespace, schedule=every("1h"), queue="none")
    spec.payload.command.argv.append("true")
    return spec


def test_bulk_calls_stay_in_the_callers_namespace(world: World, clients: dict[str, Client]) -> None:
    olga, bob, rita = clients["olga"], clients["bob"], clients["rita"]
    a, b = world.a, world.b
    mine = [olga.create_task_spec(_hourly_spec(f"bulk-{i}")).task_id for i in range(3)]
    theirs = [bob.create_task_spec(_hourly_spec(f"bulk-{i}")).task_id for i in range(3)]
    before = _snapshot(rita, [*theirs, b.tick, b.fail, b.spare], "team-b")
    # By filter: the list is olga's namespace's, so are the cancels and deletes.
    cancelled = olga.cancel_tasks_where(name_prefix="bulk-")
    assert sorted(cancelled.results) == sorted(mine) and not cancelled.errors
    # By ids: team-b's id is not found (as a missing task), the others are done.
    deleted = olga.delete_tasks([mine[0], theirs[0]])
    assert list(deleted.results) == [mine[0]]
    assert list(deleted.errors) == [theirs[0]] and isinstance(deleted.errors[theirs[0]], NotFound)
    assert f"task {theirs[0]} not found" in str(deleted.errors[theirs[0]])
    assert sorted(olga.delete_tasks_where(name_prefix="bulk-").results) == sorted(mine[1:])
    (run_b,) = [e.execution_id for e in rita.list_executions(b.fail)]
    stopped = olga.cancel_executions([run_b])
    assert not stopped.results and isinstance(stopped.errors[run_b], NotFound)
    # A dead letter of each namespace by ids: team-b's is skipped, team-a's purged.
    assert olga.purge_dead_letters([a.spare_letter, b.spare_letter]) == 1
    assert olga.redrive_dead_letters([b.spare_letter]) == []
    # An import naming team-b is refused whole, with its team-a spec: a batch is created or not at all.
    for batch in (
        [_hourly_spec("imp-b", "team-b")],
        [_hourly_spec("imp-a", "team-a"), _hourly_spec("imp-b", "team-b")],
    ):
        with pytest.raises(
            PermissionDenied, match=r"ImportTasks needs role submitter .* in namespace team-b"
        ):
            olga.import_tasks(batch)
    assert olga.import_tasks([_hourly_spec("imp-own")]).created == 1  # no namespace: the client's
    # The whole queue of team-a (the dashboard's "purge all"): team-a's letters only.
    assert _raw_purge(world, "olga", "team-a").purged == 1  # a.letter (a.spare_letter went above)
    assert {d.namespace for d in rita.list_dead_letters(all_namespaces=True)} == {"team-b"}
    # team-b: as it was, plus nothing; team-a: the bulk tasks gone, the imports that failed absent.
    assert _snapshot(rita, [*theirs, b.tick, b.fail, b.spare], "team-b") == before
    names = {(t.spec.namespace, t.spec.name) for t in rita.list_tasks(all_namespaces=True)}
    assert not {n for n in names if n[1].startswith("imp-") and n != ("team-a", "imp-own")}
    assert not {n for n in names if n[0] == "team-a" and n[1].startswith("bulk-")}
    assert {n for n in names if n[0] == "team-b" and n[1].startswith("bulk-")} == {
        ("team-b", f"bulk-{i}") for i in range(3)
    }


# -- depends_on ---------------------------------------------------------------------------------------


def test_depends_on_names_a_task_of_its_own_namespace_only(world: World, clients: dict[str, Client]) -> None:
    """docs/security.md: "A task depends (depends_on) only on tasks of its namespace": another namespace's
    task reads as missing, whoever asks (an admin of every namespace too), at create and at update."""
    alice, root, rita = clients["alice"], clients["root"], clients["rita"]
    a, b = world.a, world.b

    def spec(name: str, upstream: str) -> common_pb2.TaskSpec:
        s = _hourly_spec(name, "team-a")
        s.depends_on.add(task_id=upstream)
        return s

    ok = alice.create_task_spec(spec("dep-ok", a.tick))  # its own namespace's upstream: accepted
    assert [d.task_id for d in ok.spec.depends_on] == [a.tick]
    missing = f"spec.depends_on[0].task_id: no task {b.tick} in namespace team-a"
    for who in (alice, root):
        with pytest.raises(InvalidArgument) as err:
            who.create_task_spec(spec("dep-x", b.tick))
        assert missing in str(err.value)
    with pytest.raises(InvalidArgument) as err:
        alice.update_task(ok.task_id, spec("dep-ok", b.tick))
    assert missing in str(err.value)
    with pytest.raises(InvalidArgument) as err:  # in an import batch, named by its place in it
        alice.import_tasks([spec("dep-imported", b.tick)])
    assert f"batches[0].specs[0].depends_on[0].task_id: no task {b.tick} in namespace team-a" in str(
        err.value
    )
    # Nor does a task move to the other namespace, where its upstream is, by an update (an admin's).
    moved = spec("dep-ok", b.tick)
    moved.namespace = "team-b"
    with pytest.raises(InvalidArgument) as err:
        root.update_task(ok.task_id, moved)
    assert f"spec.namespace: task {ok.task_id} is in namespace team-a; a task cannot move" in str(err.value)
    # Nothing created, nothing changed: dep-ok still depends on team-a's tick only.
    assert [t.spec.name for t in rita.list_tasks(all_namespaces=True, name_prefix="dep-")] == ["dep-ok"]
    got = rita.get_task(ok.task_id)
    assert (got.spec.namespace, [d.task_id for d in got.spec.depends_on]) == ("team-a", [a.tick])


# -- calendars ------------------------------------------------------------------------------------------


def test_a_calendar_in_use_is_in_use_in_its_own_namespace_only(
    world: World, clients: dict[str, Client]
) -> None:
    """Calendar names are per namespace (docs/security.md): team-b's task using its "held" keeps team-b's
    from being deleted, naming the task to its own operator, and leaves team-a's "held" free."""
    olga, bob, rita = clients["olga"], clients["bob"], clients["rita"]
    for who in (olga, bob):
        who.put_calendar(common_pb2.Calendar(name="held", exclude=[WEEKEND]))
    user = bob.create_task("uses-held", cron("0 12 * * *", calendars=["held"]), command("true"), queue="qb")
    bob.put_calendar(common_pb2.Calendar(name="incl", include=["held"]))
    with pytest.raises(FailedPrecondition) as err:
        bob.delete_calendar("held")
    assert "calendar 'held' is used by " in str(err.value) and f"task {user.task_id}" in str(err.value)
    olga.delete_calendar("held")  # team-a's: used by nobody in team-a
    assert {(c.namespace, c.name) for c in rita.list_calendars(all_namespaces=True) if c.name == "held"} == {
        ("team-b", "held")
    }
    assert list(rita.get_task(user.task_id).spec.schedule.calendars) == ["held"]


def _rows(w: World) -> list[list[str]]:
    """The payloads' stamps: label, task id, execution id, worker pid."""
    rows = [line.split() for line in w.stamps.read_text().splitlines()]
    return [r for r in rows if len(r) == 4]  # else a line being written


# -- workers and notifications ---------------------------------------------------------------------------


def test_each_queue_runs_on_its_own_worker_and_failures_notify_their_own_notifier(
    world: World, clients: dict[str, Client]
) -> None:
    rita = clients["rita"]
    a, b = world.a, world.b
    pids = {w: world.cluster.workers[w].pid for w in ("wa", "wb")}
    own = {"A": ({a.tick, a.fail, a.spare}, "wa"), "B": ({b.tick, b.fail, b.spare}, "wb")}
    # Every run of each namespace's tasks (by the API) was on its queue's worker...
    for tasks, worker in own.values():
        for task in tasks:
            runs = list(rita.list_executions(task))
            assert runs and {at.worker_id for e in runs for at in e.attempts} <= {worker}, (task, runs)
    # ... and, by the payloads' own stamps, started by that worker's process and by no other.
    rows = [r for r in _rows(world) if r[0] != "R"]
    assert {r[0] for r in rows} == {"A", "B"}
    for label, task, _, parent in rows:
        tasks, worker = own[label]
        assert task in tasks and int(parent) == pids[worker], (label, task, parent)
    # A task of team-b that names team-a's queue is not run on wa, whose token holds `worker` in team-a
    # only (docs/security.md, "Workers"): it waits, and says why...
    routed = clients["bob"].create_task("routed", at(now_ms()), _stamp(world, "R"), queue="qa")
    reason = (
        "no connected worker serves namespace 'team-b' on queue 'qa' (its workers' credentials hold the "
        "worker role in other namespaces only)"
    )

    def waiting() -> common_pb2.Execution | None:
        runs = list(rita.list_executions(routed.task_id))
        return runs[0] if runs and runs[0].waiting_reason == reason else None

    pending = wait_for(waiting, 20, "the routed run's waiting reason")
    assert pending.state == common_pb2.EXECUTION_PENDING and not pending.attempts
    assert not [r for r in _rows(world) if r[1] == routed.task_id]
    # ... until a worker of team-b serves team-a's queue: it runs there, and team-a's runs stay on wa.
    args = ("--tls-ca", str(world.ca), "--queue", "qa")
    world.cluster.start_worker("wc", capacity=4, extra_args=args, env={"CRONRAFT_TOKEN": world.tokens["wc"]})
    wait_for(lambda: any(r[1] == routed.task_id for r in _rows(world)), 20, "the routed run")
    (row,) = [r for r in _rows(world) if r[1] == routed.task_id]
    assert int(row[3]) == world.cluster.workers["wc"].pid

    def ended() -> common_pb2.Execution | None:
        (run,) = rita.list_executions(routed.task_id)
        return run if run.state == SUCCEEDED else None

    assert [at.worker_id for at in wait_for(ended, 15, "the routed run to end").attempts] == ["wc"]
    since = now_ms()
    _fires_after(rita, a.tick, since)
    late = [e for e in rita.list_executions(a.tick) if e.nominal_time_ms > since]
    assert late and {at.worker_id for e in late for at in e.attempts} == {"wa"}
    # Each failure notified the notifier its task names, with its own task: page-a only team-a's.
    for ns, side in (("team-a", a), ("team-b", b)):
        bodies = wait_for(
            lambda p=world.notes[ns]: p.exists() and [json.loads(x) for x in p.read_text().splitlines()],
            15,
            f"the failure notification of {ns}",
        )
        assert {(body["event"], body["task"]["task_id"]) for body in bodies} == {("failure", side.fail)}
