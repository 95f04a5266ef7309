"""What users do around runs, with real processes: 3 `schedd` nodes and a real worker running real
commands. Notifications (a webhook notifier and a command notifier named in the nodes' config, a global
target naming the same webhook), sensors, backfill, trigger during a run, resume with replay of the
paused period, bulk cancel and delete by filter, dead letters redriven and purged by task, and an import
from a file, partly as a user types them (`schedctl` in a subprocess: exit codes and output).

The bug class these hunt: a run that should happen and never does, one that happens twice, a
notification lost or sent twice (three nodes apply every command; only the leader notifies:
docs/notifications.md), and an output that lies. Each payload appends what it ran (execution id,
nominal time, attempt) to a file outside the system, so "ran once" is what the processes saw. Waits are
conditions polled with a deadline; the only fixed windows are the paused period the misfire test needs
(time must pass) and the end of the module, where every notification received is checked to have come
exactly once.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cronraft.client import Client, at, build_spec, command, every, notifier, retry
from cronraft.errors import NotFound
from cronraft.proto.v1 import common_pb2

from .harness import Cluster, ledger_command, read_ledger, started, wait_for
from .semantics import Gate, final_execution, now_ms, only_execution, process_alive

pytestmark = pytest.mark.integration

SUCCEEDED = common_pb2.EXECUTION_SUCCEEDED
FAILED = common_pb2.EXECUTION_FAILED
SCHEDCTL = str(Path(sys.executable).with_name("schedctl"))

# The command notifier: one file per delivery attempt, with the body read from stdin, the event from its
# environment and its parent's pid (the node that ran it: the leader, docs/notifications.md "Delivery").
NOTIFY_SCRIPT = """
import json, os, sys
out = sys.argv[1]
body = sys.stdin.read()
name = f"{os.environ['CRONRAFT_NOTIFY_DELIVERY']}-{os.environ['CRONRAFT_NOTIFY_ATTEMPT']}-{os.getpid()}"
doc = {"ppid": os.getppid(), "event": os.environ["CRONRAFT_NOTIFY_EVENT"], "body": json.loads(body)}
with open(os.path.join(out, name + ".tmp"), "w") as f:
    json.dump(doc, f)
os.rename(os.path.join(out, name + ".tmp"), os.path.join(out, name + ".json"))
"""


@dataclass
class Received:
    headers: dict[str, str]
    body: dict[str, Any]


class Hook:
    """The webhook receiver on 127.0.0.1: records every POST, answers 200."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        lock = threading.Lock()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                with lock:
                    received.append(Received(dict(self.headers), json.loads(raw)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cronraft"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, task_id: str, event: str | None = None) -> list[Received]:
        return [
            r
            for r in list(self.received)
            if r.body["task"]["task_id"] == task_id and (event is None or r.body["event"] == event)
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Env:
    cluster: Cluster
    hook: Hook
    notify_dir: Path
    root: Path

    def commands_run(self, task_id: str, event: str | None = None) -> list[dict[str, Any]]:
        """What the command notifier received for `task_id` (each attempt, each process)."""
        out = []
        for p in sorted(self.notify_dir.glob("*.json")):
            doc = json.loads(p.read_text())
            if doc["body"]["task"]["task_id"] == task_id and (event is None or doc["event"] == event):
                out.append(doc)
        return out

    def schedctl(self, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """schedctl as a user types it, stdin not a terminal."""
        return subprocess.run(
            [SCHEDCTL, "--server", self.cluster.servers, *argv],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture(scope="module")
def module_env(tmp_path_factory: pytest.TempPathFactory, module_clusters: list[Cluster]) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("operations")
    hook = Hook()
    notify_dir = root / "notified"
    notify_dir.mkdir()
    script = root / "notify_cmd.py"
    script.write_text(NOTIFY_SCRIPT)
    # Both notifiers are the operator's (no [notify] webhook_hosts needed for them: that list is for a
    # task's own webhook URL). The global target is the hook notifier's very destination for failures:
    # a destination listed both on a task and globally is notified once per event.
    extra = (
        "[notify]\n"
        f'targets = [{{ webhook_url = "{hook.url}", events = ["failure"] }}]\n\n'
        "[notifiers.hook]\n"
        'kind = "webhook"\n'
        f'url = "{hook.url}"\n\n'
        "[notifiers.script]\n"
        'kind = "command"\n'
        f"argv = [{json.dumps(sys.executable)}, {json.dumps(str(script))}, {json.dumps(str(notify_dir))}]\n"
    )
    c = Cluster(root, n=3, extra_toml=extra)
    module_clusters.append(c)
    try:
        started(c)
    except BaseException:
        hook.close()
        raise
    yield Env(c, hook, notify_dir, root)
    hook.close()


@pytest.fixture
def env(module_env: Env) -> Env:
    return module_env


@pytest.fixture
def client(module_env: Env) -> Iterator[Client]:
    with Client(module_env.cluster.servers, timeout_s=30) as c:
        yield c


# -- helpers ----------------------------------------------------------------------------------------


def _soon() -> common_pb2.Schedule:
    return at(now_ms() + 300)


def _ledger(client: Client, task_id: str, since_ms: int = 0) -> dict[int, common_pb2.FireRecord]:
    """The fire ledger by nominal time."""
    return {r.nominal_time_ms: r for r in client.explain_task(task_id, from_=since_ms, limit=1000).records}


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Gate]:
    g = Gate(tmp_path / "stamps", tmp_path / "gate")
    yield g
    g.open()  # never a payload left waiting


# -- notifications ----------------------------------------------------------------------------------


def _check_headers(r: Received, event: str) -> None:
    h = r.headers
    assert h["Content-Type"] == "application/json" and h["User-Agent"] == "cronraft-notify/1"
    assert h["Cronraft-Event"] == event == r.body["event"]
    assert h["Cronraft-Delivery"] == r.body["delivery_id"] and re.fullmatch(
        r"[0-9a-f]{32}", h["Cronraft-Delivery"]
    )
    assert h["Cronraft-Attempt"] == "1"  # the receiver answered 200 at once: no retry


def _check_execution_body(body: dict[str, Any], task: common_pb2.Task, ex: common_pb2.Execution) -> None:
    assert body["version"] == 1 and body["cluster"] == ""
    assert body["task"] == {"task_id": task.task_id, "name": task.spec.name, "tags": dict(task.spec.tags)}
    got = body["execution"]
    assert got["execution_id"] == ex.execution_id and got["nominal_time_ms"] == ex.nominal_time_ms
    assert got["attempt"] == ex.attempt and got["worker_id"] == "w1" and got["manual"] is False
    assert got["exit_code"] == ex.attempts[-1].exit_code
    assert got["finished_at_ms"] > 0 and got["started_at_ms"] > 0 and got["fired_at_ms"] > 0
    assert body["missed_count"] == 0 and body["missed"] == []
    assert body["sent_at_ms"] > 0 and body["sent_at"].endswith("Z")


def test_a_failure_and_its_dead_letter_notify_once_each_from_the_leader(env: Env, client: Client) -> None:
    """One failed execution (no retries): one `failure` and one `dead_letter` POST to the hook notifier
    (the global target is the same destination: not a second one), one `dead_letter` run of the command
    notifier, on the leader; bodies with the documented fields."""
    task = client.create_task(
        "ops-notify-fail",
        _soon(),
        command("sh", "-c", "echo partial; echo boom >&2; exit 3"),
        tags={"team": "ops", "env": "test"},
        max_attempts=1,
        retry=retry("200ms"),  # a task without a retry policy is never dead-lettered
        notify=[notifier("hook"), notifier("script", ["dead-letter"])],
    )
    ex = final_execution(client, only_execution(client, task.task_id).execution_id)
    assert ex.state == FAILED and ex.dead_lettered and ex.attempts[-1].exit_code == 3

    hook = env.hook
    wait_for(
        lambda: {r.body["event"] for r in hook.of(task.task_id)} >= {"failure", "dead_letter"}, 30, "hook"
    )
    ran = wait_for(lambda: env.commands_run(task.task_id), 30, "the command notifier")
    (failure,) = hook.of(task.task_id, "failure")
    (dead,) = hook.of(task.task_id, "dead_letter")
    _check_headers(failure, "failure")
    _check_headers(dead, "dead_letter")
    _check_execution_body(failure.body, task, ex)
    _check_execution_body(dead.body, task, ex)
    fex = failure.body["execution"]
    assert fex["state"] == "failed" and fex["stdout_tail"] == "partial\n" and fex["stderr_tail"] == "boom\n"
    assert failure.body["dead_letter"] is None
    letter = dead.body["dead_letter"]
    assert letter["execution_id"] == ex.execution_id and letter["attempts"] == 1
    assert letter["nominal_time_ms"] == ex.nominal_time_ms and letter["dead_at_ms"] > 0 and letter["reason"]
    assert letter["stderr_tail"] == "boom\n" and letter["stdout_tail"] == "partial\n"
    assert failure.body["delivery_id"] != dead.body["delivery_id"]

    # The command notifier: dead letters only, run once, by the leader's process, with the same body.
    (doc,) = ran
    assert doc["event"] == "dead_letter" and doc["body"]["delivery_id"] == dead.body["delivery_id"]
    assert {k: v for k, v in doc["body"].items() if k not in ("sent_at", "sent_at_ms")} == {
        k: v for k, v in dead.body.items() if k not in ("sent_at", "sent_at_ms")
    }
    lead = env.cluster.leader()
    assert lead is not None and lead.proc is not None and doc["ppid"] == lead.proc.pid


def test_a_timeout_notifies_once_with_its_state(env: Env, client: Client) -> None:
    """A timed-out execution: one `timeout` POST (the task subscribed to timeouts only: no dead letter;
    the global target wants failures: not a timeout)."""
    task = client.create_task(
        "ops-notify-timeout",
        _soon(),
        command("sleep", "30"),
        timeout_ms=800,
        max_attempts=1,
        retry=retry("200ms"),  # a task without a retry policy is never dead-lettered
        notify=[notifier("hook", ["timeout"])],
    )
    ex = final_execution(client, only_execution(client, task.task_id).execution_id)
    assert ex.state == common_pb2.EXECUTION_TIMED_OUT
    (got,) = wait_for(lambda: env.hook.of(task.task_id), 30, "the timeout notification")
    _check_headers(got, "timeout")
    assert (
        got.body["execution"]["state"] == "timed_out"
        and got.body["execution"]["execution_id"] == ex.execution_id
    )
    assert got.body["dead_letter"] is None


def test_resume_with_replay_hands_the_paused_period_to_the_misfire_policy(env: Env, client: Client) -> None:
    """Four 1 s tasks paused together for more than the 5 s misfire threshold, then resumed: `skip` with
    replay records every paused time `missed_downtime` and sends one `missed` notification listing exactly
    them (webhook and command); `fire_once` runs the latest once; `fire_all` with a 2 s catch-up window runs
    those inside it, one execution each; without replay they are `paused`, nothing runs and nothing is sent.
    Each goes on firing afterwards."""
    ledgers = {name: env.root / f"{name}.ledger" for name in ("skip", "once", "all", "plain")}
    notify = [notifier("hook", ["missed"]), notifier("script", ["missed"])]
    tasks = {
        "skip": client.create_task(
            "ops-replay-skip",
            every("1s"),
            command(*ledger_command(ledgers["skip"])),
            misfire="skip",
            notify=notify,
        ),
        "once": client.create_task(
            "ops-replay-once", every("1s"), command(*ledger_command(ledgers["once"])), misfire="fire-once"
        ),
        "all": client.create_task(
            "ops-replay-all",
            every("1s"),
            command(*ledger_command(ledgers["all"])),
            misfire="fire-all",
            catchup_window="2s",
        ),
        "plain": client.create_task(
            "ops-replay-plain", every("1s"), command(*ledger_command(ledgers["plain"])), notify=notify
        ),
    }
    for name, t in tasks.items():
        wait_for(
            lambda t=t: any(e.state == SUCCEEDED for e in client.list_executions(t.task_id)),
            20,
            f"{name} ran",
        )
    for t in tasks.values():
        client.pause_task(t.task_id, note="maintenance")
    paused_at = now_ms()
    before = {
        name: {e.nominal_time_ms for e in client.list_executions(t.task_id)} for name, t in tasks.items()
    }
    last_before = {name: max(ns) for name, ns in before.items()}
    # The paused period: time passing is the condition (the misfire threshold is 5 s).
    wait_for(lambda: now_ms() >= paused_at + 6_500, 10, "the paused period")
    resumed: dict[str, int] = {}
    for name, t in tasks.items():
        resumed[name] = now_ms()
        client.resume_task(t.task_id, replay_missed=name != "plain")

    def runs_after(name: str, count: int) -> list[common_pb2.Execution]:
        t = tasks[name]
        return wait_for(
            lambda: (
                (xs := [e for e in client.list_executions(t.task_id) if e.nominal_time_ms >= resumed[name]])
                and sum(e.state == SUCCEEDED for e in xs) >= count
                and xs
            ),
            20,
            f"{name} firing after its resume",
        )

    for name in tasks:
        runs_after(name, 2)
    # Stopped, and every node at the same index: the ledger and the executions read below agree.
    for t in tasks.values():
        client.cancel_task(t.task_id)
    env.cluster.wait_converged()

    def after_pause(name: str) -> list[tuple[common_pb2.FireRecord, list[common_pb2.Execution]]]:
        """The ledger from the first time not fired before the pause on, each record with its executions."""
        t = tasks[name]
        by_nominal: dict[int, list[common_pb2.Execution]] = {}
        for e in client.list_executions(t.task_id):
            by_nominal.setdefault(e.nominal_time_ms, []).append(e)
        recs = sorted(
            _ledger(client, t.task_id, last_before[name] + 1).values(), key=lambda r: r.nominal_time_ms
        )
        assert [r.nominal_time_ms for r in recs] == [
            last_before[name] + 1000 * (i + 1) for i in range(len(recs))
        ]
        return [(r, by_nominal.get(r.nominal_time_ms, [])) for r in recs]

    def split(name: str, outcome: int) -> tuple[list[int], list[tuple[int, list[common_pb2.Execution]]]]:
        """The leading run of records with `outcome` (none ran), then the fired ones (one execution each)."""
        recs = after_pause(name)
        head = list(itertools.takewhile(lambda re: re[0].outcome == outcome, recs))
        assert all(not xs for _, xs in head), f"{name}: a {outcome} time ran"
        tail = recs[len(head) :]
        assert tail and all(r.outcome == common_pb2.FIRED and len(xs) == 1 for r, xs in tail), (name, tail)
        return [r.nominal_time_ms for r, _ in head], [(r.nominal_time_ms, xs) for r, xs in tail]

    # skip: every paused time missed_downtime, none ran, the next one is the first future time; one
    # missed notification naming exactly them, with the ledger's reasons.
    missed_times, fired = split("skip", common_pb2.MISSED_DOWNTIME)
    assert len(missed_times) >= 5 and fired[0][0] >= resumed["skip"]
    tid = tasks["skip"].task_id
    (missed,) = wait_for(lambda: env.hook.of(tid, "missed"), 20, "the missed notification")
    _check_headers(missed, "missed")
    body = missed.body
    assert body["execution"] is None and body["dead_letter"] is None
    assert [m["nominal_time_ms"] for m in body["missed"]] == missed_times
    assert body["missed_count"] == len(missed_times)
    reasons = {n: r.reason for n, r in _ledger(client, tid, missed_times[0]).items()}
    assert [m["reason"] for m in body["missed"]] == [reasons[n] for n in missed_times]
    assert all(m["reason"] for m in body["missed"]), "the ledger's reason"
    (doc,) = wait_for(lambda: env.commands_run(tid, "missed"), 20, "the command notifier's missed")
    assert doc["body"]["delivery_id"] == body["delivery_id"] and doc["body"]["missed"] == body["missed"]

    # fire_once: the others missed, the latest paused time ran once, late (fired after its nominal time).
    missed_once, fired = split("once", common_pb2.MISSED_DOWNTIME)
    (latest, (ex,)) = fired[0]
    assert len(missed_once) >= 4 and latest < resumed["once"] + 1000 and ex.fired_at_ms > latest
    # fire_all with a 2 s window: the older ones missed, those within the window ran once each, late.
    missed_all, fired = split("all", common_pb2.MISSED_DOWNTIME)
    caught_up = [(n, ex) for n, (ex,) in fired if ex.fired_at_ms > n + 500]
    assert len(missed_all) >= 3 and 1 <= len(caught_up) <= 3 and caught_up[0][0] < resumed["all"]
    # without replay: paused, nothing ran, the next future time fires, nothing sent.
    paused_times, fired = split("plain", common_pb2.PAUSED)
    assert len(paused_times) >= 5 and fired[0][0] >= resumed["plain"]
    assert env.hook.of(tasks["plain"].task_id) == [] and env.commands_run(tasks["plain"].task_id) == []
    for name, path in ledgers.items():
        rows = read_ledger(path)
        assert len({eid for eid, _, _ in rows}) == len(rows), f"{name}: an execution ran twice"


# -- sensors ----------------------------------------------------------------------------------------


def test_a_sensor_from_schedctl_holds_the_run_until_it_succeeds(env: Env, client: Client) -> None:
    ready = env.root / "sensor-ready"
    ledger = env.root / "sensor-cli.ledger"
    created = env.schedctl(
        "-o", "json", "task", "create", "--name", "ops-sensor-cli", "--at", "+1s",
        "--sensor-command", f"test -f {ready}", "--sensor-interval", "200ms", "--sensor-timeout", "60s",
        "--", *ledger_command(ledger),
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    task_id = json.loads(created.stdout)["task_id"]
    assert json.loads(created.stdout)["spec"]["sensor"]["interval_ms"] == 200
    ex = only_execution(client, task_id)
    wait_for(
        lambda: client.get_execution(ex.execution_id).state == common_pb2.EXECUTION_RUNNING, 30, "leased"
    )
    # The probe has run (and failed) a few times: its interval passing is the condition.
    leased_at = time.monotonic()
    wait_for(lambda: time.monotonic() - leased_at > 1.0, 5, "a few probes")
    assert read_ledger(ledger) == []
    ready.touch()
    done = final_execution(client, ex.execution_id)
    assert done.state == SUCCEEDED and done.attempt == 1
    assert [(eid, a) for eid, _, a in read_ledger(ledger)] == [(ex.execution_id, 1)]


def test_a_sensor_never_satisfied_spends_its_attempts_then_dead_letters(env: Env, client: Client) -> None:
    """Each attempt's probe times out ('sensor not satisfied'): retried per the retry policy, the payload
    never runs, the execution fails into the dead-letter queue, and the failure is notified once."""
    ledger = env.root / "sensor-never.ledger"
    spec = build_spec(
        "ops-sensor-never",
        _soon(),
        command(*ledger_command(ledger)),
        max_attempts=2,
        retry=retry("200ms"),
        notify=[notifier("hook", ["failure"])],
    )
    spec.sensor.CopyFrom(common_pb2.Sensor(probe=command("false"), interval_ms=200, timeout_ms=1_000))
    task = client.create_task_spec(spec)
    ex = final_execution(client, only_execution(client, task.task_id).execution_id)
    assert ex.state == FAILED and ex.attempt == 2 and ex.dead_lettered
    assert [a.outcome for a in ex.attempts] == [common_pb2.ATTEMPT_FAILED] * 2
    assert all("sensor not satisfied" in a.error for a in ex.attempts), [a.error for a in ex.attempts]
    assert read_ledger(ledger) == []
    (got,) = wait_for(lambda: env.hook.of(task.task_id), 20, "the failure notification")
    assert got.body["execution"]["attempt"] == 2 and "sensor not satisfied" in got.body["execution"]["error"]


def test_a_cancel_while_the_sensor_waits_ends_it_without_waiting_the_interval(
    env: Env, client: Client
) -> None:
    ledger = env.root / "sensor-cancel.ledger"
    spec = build_spec("ops-sensor-cancel", _soon(), command(*ledger_command(ledger)))
    spec.sensor.CopyFrom(common_pb2.Sensor(probe=command("false"), interval_ms=60_000, timeout_ms=600_000))
    task = client.create_task_spec(spec)
    ex = only_execution(client, task.task_id)
    wait_for(
        lambda: client.get_execution(ex.execution_id).state == common_pb2.EXECUTION_RUNNING, 30, "leased"
    )
    asked = time.monotonic()
    client.cancel_execution(ex.execution_id, reason="not needed")
    done = final_execution(client, ex.execution_id, timeout_s=20)
    assert done.state == common_pb2.EXECUTION_CANCELLED and time.monotonic() - asked < 10
    assert read_ledger(ledger) == []


# -- backfill and trigger ---------------------------------------------------------------------------


def test_backfill_runs_each_past_time_once_and_a_second_backfill_none(env: Env, client: Client) -> None:
    ledger = env.root / "backfill.ledger"
    task = client.create_task("ops-backfill", every("2s"), command(*ledger_command(ledger)))
    first = task.next_fire_ms
    assert first % 2000 == 0
    wait_for(
        lambda: sum(e.state == SUCCEEDED for e in client.list_executions(task.task_id)) >= 1, 20, "a fire"
    )
    # Four past times before its first fire, plus that fire (which has its ledger outcome: not again).
    lo, hi = first - 8_000, first
    made = client.backfill_task(task.task_id, lo, hi)
    wanted = [first - 8_000, first - 6_000, first - 4_000, first - 2_000]
    assert sorted(e.nominal_time_ms for e in made) == wanted and all(e.manual for e in made)
    for e in made:
        assert final_execution(client, e.execution_id).state == SUCCEEDED
    ledger_out = _ledger(client, task.task_id, lo)
    assert [ledger_out[n].outcome for n in wanted] == [common_pb2.MANUAL] * 4
    assert ledger_out[first].outcome == common_pb2.FIRED
    assert {ledger_out[n].execution_id for n in wanted} == {e.execution_id for e in made}

    again = client.backfill_task(task.task_id, lo, hi)
    assert again == []
    client.cancel_task(task.task_id)
    runs = [e for e in client.list_executions(task.task_id) if lo <= e.nominal_time_ms <= hi]
    assert sorted(e.nominal_time_ms for e in runs) == [*wanted, first]
    rows = [(n, a) for _, n, a in read_ledger(ledger) if lo <= n <= hi]
    assert sorted(rows) == [(n, 1) for n in [*wanted, first]], "each nominal time ran exactly once"


def test_backfill_under_overlap_skip_runs_them_one_after_another(client: Client, gate: Gate) -> None:
    hour = 3_600_000
    task = client.create_task("ops-backfill-skip", every("1h"), gate.payload(), overlap="skip")
    lo = (task.next_fire_ms // hour - 3) * hour
    made = client.backfill_task(task.task_id, lo, lo + 2 * hour)
    assert len(made) == 3, [e.nominal_time_ms for e in made]
    wait_for(lambda: gate.stamps_of("start"), 30, "the first backfilled run")
    assert len(gate.stamps_of("start")) == 1  # one at a time
    gate.open()
    done = [final_execution(client, e.execution_id) for e in made]
    assert [e.state for e in done] == [SUCCEEDED] * 3
    starts, ends = gate.stamps_of("start"), gate.stamps_of("end")
    assert set(starts) == set(ends) == {e.execution_id for e in made}
    spans = sorted((starts[e][1], ends[e][1]) for e in starts)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), "two backfilled runs overlapped"
    client.cancel_task(task.task_id)


def test_trigger_while_a_run_is_active_under_allow_all_runs_both(client: Client, gate: Gate) -> None:
    task = client.create_task("ops-trigger-allow", every("1h"), gate.payload(), overlap="allow_all")
    one = client.trigger_task(task.task_id)
    wait_for(lambda: one.execution_id in gate.stamps_of("start"), 30, "the first trigger running")
    two = client.trigger_task(task.task_id)
    wait_for(lambda: two.execution_id in gate.stamps_of("start"), 30, "the second trigger running beside it")
    assert not gate.stamps_of("end")  # both at once
    assert client.get_task(task.task_id).next_fire_ms == task.next_fire_ms  # the schedule is unchanged
    gate.open()
    assert [final_execution(client, e.execution_id).state for e in (one, two)] == [SUCCEEDED] * 2
    manual = [r for r in _ledger(client, task.task_id, 0).values() if r.outcome == common_pb2.MANUAL]
    assert sorted(r.execution_id for r in manual) == sorted([one.execution_id, two.execution_id])
    client.cancel_task(task.task_id)


# -- bulk -------------------------------------------------------------------------------------------


def test_schedctl_cancel_by_tag_needs_confirmation_then_stops_exactly_those(env: Env, client: Client) -> None:
    ledgers = {n: env.root / f"cancel-{n}.ledger" for n in ("a", "b", "c", "keep")}
    tasks = {
        n: client.create_task(
            f"ops-cancel-{n}",
            every("1s"),
            command(*ledger_command(p)),
            tags={"batch": "keep" if n == "keep" else "c1"},
        )
        for n, p in ledgers.items()
    }
    for n, t in tasks.items():
        wait_for(lambda t=t: list(client.list_executions(t.task_id)), 20, f"{n} firing")

    refused = env.schedctl("task", "cancel", "--tag", "batch=c1")
    assert refused.returncode == 2 and "confirmation needed" in refused.stderr and "--yes" in refused.stderr
    assert all(client.get_task(t.task_id).state == common_pb2.TASK_SCHEDULED for t in tasks.values())

    done = env.schedctl("task", "cancel", "--tag", "batch=c1", "--yes")
    assert done.returncode == 0, done.stderr
    for n in ("a", "b", "c"):
        assert tasks[n].task_id in done.stdout
        got = client.get_task(tasks[n].task_id)
        assert got.state == common_pb2.TASK_CANCELLED and got.next_fire_ms == 0
    assert tasks["keep"].task_id not in done.stdout
    counts = {n: len(list(client.list_executions(tasks[n].task_id))) for n in ("a", "b", "c")}
    keep_seen = len(list(client.list_executions(tasks["keep"].task_id)))
    # The untouched task fires twice more: the cancelled ones, not once.
    wait_for(
        lambda: len(list(client.list_executions(tasks["keep"].task_id))) >= keep_seen + 2, 20, "keep firing"
    )
    assert {n: len(list(client.list_executions(tasks[n].task_id))) for n in counts} == counts
    assert client.get_task(tasks["keep"].task_id).state == common_pb2.TASK_SCHEDULED
    # Cancelling again leaves the cancelled ones alone.
    again = env.schedctl("task", "cancel", "--tag", "batch=c1", "--yes")
    assert again.returncode == 0, again.stderr
    client.cancel_task(tasks["keep"].task_id)


def test_delete_by_name_prefix_refuses_a_running_task_until_forced(client: Client, gate: Gate) -> None:
    idle = client.create_task("ops-del-idle", every("1h"), command("true"))
    busy = client.create_task("ops-del-busy", every("1h"), gate.payload())
    other = client.create_task("ops-dell-other", every("1h"), command("true"))
    done_idle = final_execution(client, client.trigger_task(idle.task_id).execution_id)
    running = client.trigger_task(busy.task_id)
    pid, _ = wait_for(lambda: gate.stamps_of("start").get(running.execution_id), 30, "the busy run started")

    first = client.delete_tasks_where(name_prefix="ops-del-")
    assert list(first.results) == [idle.task_id] and first.results[idle.task_id].executions_deleted == 1
    assert list(first.errors) == [busy.task_id] and running.execution_id in str(first.errors[busy.task_id])
    assert client.get_task(busy.task_id).state == common_pb2.TASK_SCHEDULED and process_alive(pid)

    forced = client.delete_tasks_where(name_prefix="ops-del-", force=True)
    assert list(forced.results) == [busy.task_id] and not forced.errors
    for t in (idle, busy):
        with pytest.raises(NotFound):
            client.get_task(t.task_id)
    for eid in (done_idle.execution_id, running.execution_id):
        with pytest.raises(NotFound):
            client.get_execution(eid)
    wait_for(lambda: not process_alive(pid), 20, "the running payload killed")
    assert running.execution_id not in gate.stamps_of("end")
    assert client.get_task(other.task_id).state == common_pb2.TASK_SCHEDULED
    client.cancel_task(other.task_id)


def test_schedctl_dlq_redrive_and_purge_by_task(env: Env, client: Client) -> None:
    flag = env.root / "dlq-fixed"
    ledger_a = env.root / "dlq-a.ledger"
    # Records each run, fails (exit 4) until the flag file exists.
    code = (
        f"import os, sys; f = open({str(ledger_a)!r}, 'a'); "
        "f.write(os.environ['CRONRAFT_EXECUTION_ID'] + ' ' + os.environ['CRONRAFT_ATTEMPT'] + chr(10)); "
        f"f.close(); sys.exit(0 if os.path.exists({str(flag)!r}) else 4)"
    )
    a = client.create_task(
        "ops-dlq-a", every("1h"), command(sys.executable, "-c", code), max_attempts=1, retry=retry("200ms")
    )
    b = client.create_task("ops-dlq-b", every("1h"), command("false"), max_attempts=1, retry=retry("200ms"))
    execs = {t.task_id: [client.trigger_task(t.task_id).execution_id for _ in range(2)] for t in (a, b)}
    for ids in execs.values():
        for eid in ids:
            assert final_execution(client, eid).state == FAILED
    wait_for(lambda: len(list(client.list_dead_letters(task_id=a.task_id))) == 2, 20, "a's letters")
    wait_for(lambda: len(list(client.list_dead_letters(task_id=b.task_id))) == 2, 20, "b's letters")

    flag.touch()
    redriven = env.schedctl("-o", "json", "dlq", "redrive", "--task", "ops-dlq-a")
    assert redriven.returncode == 0, redriven.stderr
    assert sorted(e["execution_id"] for e in json.loads(redriven.stdout)) == sorted(execs[a.task_id])
    for eid in execs[a.task_id]:
        done = final_execution(client, eid)
        assert done.state == SUCCEEDED and done.redrives == 1 and done.attempt == 2
    assert list(client.list_dead_letters(task_id=a.task_id)) == []
    rows = sorted(ln.split() for ln in ledger_a.read_text().splitlines())
    assert rows == sorted([[e, "1"] for e in execs[a.task_id]] + [[e, "2"] for e in execs[a.task_id]])
    nothing = env.schedctl("-o", "json", "dlq", "redrive", "--task", "ops-dlq-a")
    assert nothing.returncode == 0 and json.loads(nothing.stdout) == []

    refused = env.schedctl("dlq", "purge", "--task", "ops-dlq-b")
    assert refused.returncode == 2 and len(list(client.list_dead_letters(task_id=b.task_id))) == 2
    purged = env.schedctl("dlq", "purge", "--task", "ops-dlq-b", "--yes")
    assert purged.returncode == 0, purged.stderr
    assert "purged 2 dead letter(s)" in purged.stdout
    assert list(client.list_dead_letters(task_id=b.task_id)) == []
    for t in (a, b):
        client.cancel_task(t.task_id)


def test_schedctl_import_creates_tasks_that_fire_once_and_a_rerun_creates_none(
    env: Env, client: Client
) -> None:
    due = now_ms() + 2_000
    ledgers = [env.root / f"import-{i}.ledger" for i in range(3)]
    lines = [
        json.dumps(
            {
                "name": f"ops-import-{i}",
                "tags": {"batch": "ops-import"},
                "schedule": {"kind": "at", "at_ms": due},
                "payload": {"kind": "command", "argv": ledger_command(p)},
            }
        )
        for i, p in enumerate(ledgers)
    ]
    path = env.root / "tasks.jsonl"
    path.write_text("\n".join(lines) + "\n\n")
    first = env.schedctl("-o", "json", "task", "import", str(path), "--import-id", "ops-import-1", "--quiet")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["created"] == 3 and summary["total"] == 3 and summary["import_id"] == "ops-import-1"
    # A read may go to a follower that has not applied the import yet (docs/multi-region.md).
    tasks = wait_for(
        lambda: (ts := list(client.list_tasks(tags={"batch": "ops-import"}))) and len(ts) >= 3 and ts,
        10,
        "the imported tasks listed",
    )
    assert sorted(t.spec.name for t in tasks) == [f"ops-import-{i}" for i in range(3)]
    assert all(t.next_fire_ms == due for t in tasks)

    again = env.schedctl("-o", "json", "task", "import", str(path), "--import-id", "ops-import-1", "--quiet")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["created"] == 0 and json.loads(again.stdout)["replayed"] >= 1
    for t in tasks:
        wait_for(
            lambda t=t: client.get_task(t.task_id).state == common_pb2.TASK_COMPLETED, 20, "imported fire"
        )
        ex = final_execution(client, only_execution(client, t.task_id).execution_id)
        assert ex.state == SUCCEEDED and ex.nominal_time_ms == due
    assert len(list(client.list_tasks(tags={"batch": "ops-import"}))) == 3
    for p in ledgers:
        assert [n for _, n, _ in read_ledger(p)] == [due]


# -- last: every notification came once --------------------------------------------------------------


def test_every_notification_of_the_module_was_delivered_once(env: Env) -> None:
    """Three nodes applied every command above; a notification sent by more than one of them (or twice by
    the leader) shows as a second receipt of its delivery id at one destination. The receiver answered
    200 every time, so there was no retry either. Checked last, seconds after the events, so that a late
    duplicate had time to come."""
    received = list(env.hook.received)
    assert len(received) >= 6
    ids = [r.body["delivery_id"] for r in received]
    assert len(ids) == len(set(ids)), "a notification reached the webhook twice"
    assert all(r.headers["Cronraft-Attempt"] == "1" for r in received)
    runs = [json.loads(p.read_text()) for p in env.notify_dir.glob("*.json")]
    assert runs and len({d["body"]["delivery_id"] for d in runs}) == len(runs), "a command notifier ran twice"
    lead = env.cluster.leader()
    assert lead is not None and lead.proc is not None
    assert {d["ppid"] for d in runs} == {lead.proc.pid}
