"""A rolling upgrade that raises the feature `schedule_fixes` while tasks whose behaviour it changes run,
with real processes (docs/operations.md, "Upgrades"; raft/features.py).

Three nodes of the release before the feature (f538dfa, extracted with git as tests/integration/
test_upgrade.py extracts its previous release, run with this interpreter: it pins what this checkout
pins) and a worker of this release. Set up below the feature: a per-second task, keep_executions 2 with
three runs held live, an overlap skip task whose first run holds, two fixed-delay tasks paused before
their next run came due, and a paused task edited. Then each node is replaced by this release on its data
directory (SIGTERM, start, caught up: followers first, the leader last, as the procedure says). Checked:
- below the feature (old nodes, then old and new ones), the previous release's behaviour: an edit while
  paused keeps the old schedule's next fire, a fixed-delay task resumed after its run came due completes,
  keep_executions lets the newest ended runs go while three older ones live (the task holds at most 4),
  an overlap skip reads 'execution X is execution_running';
- the level rises on every node once the last one is new, and never before;
- above it, the new behaviour: the other paused fixed-delay task resumed runs at the resume (its missed
  run recorded paused), an edit while paused takes the new schedule's next time, the task holds its 3
  live runs and its 2 newest, the overlap reason is in words, and every skip reason before the raise is
  the old one and after it the new one;
- the per-second task fired and ran once per second across the whole upgrade;
- the three stores end with one state (raft.digest, compared at one index).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from cronraft.client import Client, command, delay, every, retention
from cronraft.proto.v1 import common_pb2
from cronraft.raft.features import SCHEDULE_FIXES as FIXES
from cronraft.raft.features import SUPPORTED
from tests.support.replay import same_state

from .harness import Cluster, NodeProc, Worker, started, wait_for
from .semantics import Gate, executions_where, now_ms, runs_of
from .test_operations_real import (
    LIVE,
    RUNNING,
    SUCCEEDED,
    digests,
    fired_every,
    ledger_of,
    name,
    payload,
    runs_in,
)

pytestmark = pytest.mark.integration

# The release before the feature schedule_fixes (its first correction, c4090b9, came after it, and
# 8cef891 put that one under the feature). Every change of what apply stores since is under it
# (raft/features.py's rule), so below the feature old and new nodes apply a log alike.
BEFORE_FIXES = "f538dfa"
REPO = Path(__file__).resolve().parents[2]
FD_DELAY_MS = 3000
EDIT_PERIOD_MS = 10_000

# A payload that holds on the gate if it is one of the first `holds` runs of its task to start (each
# claims a slot file with O_EXCL: exactly that many hold, whatever their order), else ends at once. It
# stamps `what execution pid monotonic_ns` as semantics.Gate reads them: start, held, end.
_HOLD_FIRST = (
    "import os, sys, time\n"
    "stamps, slots, holds, gate = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]\n"
    "eid = os.environ['CRONRAFT_EXECUTION_ID']\n"
    "def stamp(what):\n"
    "    with open(stamps, 'a') as f:\n"
    "        f.write(f'{what} {eid} {os.getpid()} {time.monotonic_ns()}\\n')\n"
    "def claim():\n"
    "    for i in range(holds):\n"
    "        try:\n"
    "            os.close(os.open(f'{slots}.{i}', os.O_CREAT | os.O_EXCL | os.O_WRONLY))\n"
    "            return True\n"
    "        except FileExistsError:\n"
    "            pass\n"
    "    return False\n"
    "stamp('start')\n"
    "if claim():\n"
    "    stamp('held')\n"
    "    deadline = time.monotonic() + 60\n"
    "    while not os.path.exists(gate) and time.monotonic() < deadline:\n"
    "        time.sleep(0.02)\n"
    "stamp('end')\n"
)


def hold_first(gate: Gate, holds: int, slots: Path) -> common_pb2.Payload:
    return command(
        sys.executable, "-c", _HOLD_FIRST, str(gate.stamps), str(slots), str(holds), str(gate.gate)
    )


@pytest.fixture(scope="module")
def release_before_fixes() -> Path:
    """The source tree of BEFORE_FIXES, extracted once per machine (as test_upgrade.py's previous release)
    and run with this interpreter: it pins what this checkout pins, so it runs with what this does."""
    root = Path(tempfile.gettempdir()) / f"cronraft-release-{BEFORE_FIXES}"
    if not (root / "cronraft" / "__init__.py").exists():
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", BEFORE_FIXES], capture_output=True, check=False
        )
        if archive.returncode != 0:
            pytest.skip(f"commit {BEFORE_FIXES} is not in this checkout's history")
        partial = Path(tempfile.mkdtemp(prefix="cronraft-release-", dir=tempfile.gettempdir()))
        subprocess.run(["tar", "-x", "-C", str(partial)], input=archive.stdout, check=True)
        with contextlib.suppress(OSError):  # another session extracted it meanwhile: use theirs
            partial.rename(root)
        shutil.rmtree(partial, ignore_errors=True)
    if (root / "constraints.txt").read_text() != (REPO / "constraints.txt").read_text():
        pytest.skip(f"{BEFORE_FIXES} pins other versions than this checkout: it needs its own venv")
    return root


def feature_levels(cluster: Cluster) -> dict[str, frozenset[str]]:
    return {n.node_id: frozenset(n.status().features) for n in cluster.nodes if n.alive}


def upgrade(cluster: Cluster, node: NodeProc) -> None:
    """The documented step: SIGTERM the node, start this release on its data directory, wait until it
    says it is new and has caught up."""
    cluster.kill(node, signal.SIGTERM)
    cluster.node_env.pop(node.node_id, None)
    cluster.start_node(node)
    wait_for(lambda: set(node.status().versions.features) == SUPPORTED, 30, f"{node.node_id} to be new")
    cluster.core.wait_caught_up(30)


def test_a_rolling_upgrade_raises_schedule_fixes_on_every_node_at_once(
    tmp_path: Path, clusters: list[Cluster], release_before_fixes: Path
) -> None:
    old = {"PYTHONPATH": str(release_before_fixes)}
    (tmp_path / "cluster").mkdir()
    c = Cluster(
        tmp_path / "cluster",
        n=3,
        node_env={f"node{i}": dict(old) for i in (1, 2, 3)},
        extra_toml="[clock]\nprobe_interval_ms = 200\n",  # the members' announcements, each 200 ms
    )
    clusters.append(c)
    started(c, workers=(Worker("wu", capacity=16),))
    lead = c.wait_leader()
    assert FIXES not in lead.status().features and FIXES not in lead.status().versions.features
    runs_file = tmp_path / "runs"
    keep_gate = Gate(tmp_path / "keep-stamps", tmp_path / "gate")
    skip_gate = Gate(tmp_path / "skip-stamps", tmp_path / "gate")
    with Client(c.servers, timeout_s=30) as client:
        tick = client.create_task("up-tick", every("1s"), payload(runs_file))
        keep = client.create_task(
            "up-keep",
            every("1s"),
            hold_first(keep_gate, 3, tmp_path / "keep-slot"),
            overlap="allow_all",
            retention=retention(keep_executions=2),
        )
        skip = client.create_task(
            "up-skip", every("1s"), hold_first(skip_gate, 1, tmp_path / "skip-slot"), overlap="skip"
        )
        fds = {
            when: client.create_task(f"up-fd-{when}", delay(f"{FD_DELAY_MS}ms"), payload(runs_file))
            for when in ("below", "across")
        }
        edit = client.create_task("up-edit", every(f"{EDIT_PERIOD_MS}ms"), payload(runs_file))
        client.pause_task(edit.task_id)

        # Each fixed-delay task paused once its first run ended, before its next run is due.
        for t in fds.values():
            (first,) = executions_where(client, t.task_id, lambda xs: xs[0].state == SUCCEEDED, "a first run")
            paused = client.pause_task(t.task_id)
            assert paused.next_fire_ms == first.completed_at_ms + FD_DELAY_MS > now_ms(), paused
        # Below the gate, as the release before it: an edit while paused keeps the old schedule's next.
        old_next = client.get_task(edit.task_id).next_fire_ms
        moved = client.update_task(edit.task_id, _every(client, edit.task_id, anchor_ms=3000))
        assert moved.next_fire_ms == old_next and old_next % EDIT_PERIOD_MS == 0, moved
        # ... keep_executions counts live runs: while three runs hold, the newest ended ones go.
        held = set(wait_for(lambda: _held(keep_gate, 3), 20, "three held runs"))
        below = [kept(client, keep.task_id, held)]

        # The rolling upgrade: followers first, one at a time, then the leader.
        lead = c.wait_leader()
        first_new, second_new = [n for n in c.nodes if n is not lead]
        upgrade(c, first_new)
        assert all(FIXES not in f for f in feature_levels(c).values())
        # Old and new nodes, below the gate: a fixed-delay task resumed after its next run came due
        # completes (no run ever again), as the release before the feature did.
        due = max(client.get_task(t.task_id).next_fire_ms for t in fds.values())
        wait_for(lambda: now_ms() > due + 200, 10, "the paused runs to come due")
        done = client.resume_task(fds["below"].task_id)
        assert done.state == common_pb2.TASK_COMPLETED and done.next_fire_ms == 0, done
        below.append(kept(client, keep.task_id, held))
        upgrade(c, second_new)
        assert all(FIXES not in f for f in feature_levels(c).values())
        below.append(kept(client, keep.task_id, held))
        before_last = now_ms()  # no member of the old release left from here on: the level may rise
        upgrade(c, lead)
        wait_for(
            lambda: all(FIXES in f for f in feature_levels(c).values()), 30, "schedule_fixes on every node"
        )
        raised_by = now_ms()
        assert len(feature_levels(c)) == 3

        # Above the gate, the new behaviour: the paused fixed-delay task resumed goes on ...
        asked = now_ms()
        resumed = client.resume_task(fds["across"].task_id)
        assert resumed.state == common_pb2.TASK_SCHEDULED and asked <= resumed.next_fire_ms <= now_ms(), (
            resumed
        )
        ran = executions_where(
            client, fds["across"].task_id, lambda xs: len(xs) == 2 and xs[1].state == SUCCEEDED, "its run"
        )
        assert ran[1].nominal_time_ms == resumed.next_fire_ms
        # ... an edit while paused takes the new schedule's next time ...
        moved = client.update_task(edit.task_id, _every(client, edit.task_id, anchor_ms=7000))
        assert moved.next_fire_ms % EDIT_PERIOD_MS == 7000 and moved.next_fire_ms > raised_by, moved
        # ... keep_executions keeps the newest two, live or ended, beside the held runs.
        fires = client.get_task(keep.task_id).fire_count
        wait_for(lambda: client.get_task(keep.task_id).fire_count >= fires + 2, 10, "two fires above")
        above = [kept(client, keep.task_id, held)]
        wait_for(lambda: client.get_task(keep.task_id).fire_count >= fires + 3, 10, "another fire above")
        above.append(kept(client, keep.task_id, held))
        keep_gate.open()
        skip_gate.open()
        ids = [t.task_id for t in (tick, keep, skip, fds["across"])]
        for tid in ids:
            client.pause_task(tid)
        wait_for(lambda: not [e for t in ids for e in runs_of(client, t) if e.state in LIVE], 30, "the runs")
        skipped = ledger_of(client, skip.task_id)
        ticks = ledger_of(client, tick.task_id), runs_of(client, tick.task_id)
        fd_ledger = ledger_of(client, fds["across"].task_id)
    c.core.kill("wu", signal.SIGTERM, timeout_s=30)

    assert max(below) <= 4 and min(above) == 5, (below, above)
    reasons = [(r.committed_at_ms, r.reason) for r in skipped.values() if name(r) == "SKIPPED_OVERLAP"]
    words = {
        "old": [at_ for at_, why in reasons if why.endswith(" is execution_running")],
        "new": [at_ for at_, why in reasons if why.endswith(" still running (overlap skip)")],
    }
    assert len(words["old"]) + len(words["new"]) == len(reasons), reasons
    assert words["old"] and words["new"] and max(words["old"]) < min(words["new"]), reasons
    assert max(words["old"]) < raised_by and min(words["new"]) > before_last, reasons
    # Its first run, the run due while paused, the run at the resume (then what the final pause left).
    assert [name(fd_ledger[n]) for n in sorted(fd_ledger)][:3] == ["FIRED", "PAUSED", "FIRED"], fd_ledger
    fired_every(*ticks, 1000)
    ran_ticks = Counter(r.execution_id for r in runs_in(runs_file))
    assert all(ran_ticks[e.execution_id] == 1 for e in ticks[1]), "a tick ran twice or never"

    # Every node applied the same: stopped, their stores hold one state.
    c.wait_converged(30)
    c.stop()
    dirs = {n.node_id: c.root / n.node_id for n in c.nodes}
    same_state(digests(dirs), dirs, tmp_path / "replay")


def _every(client: Client, task_id: str, anchor_ms: int) -> common_pb2.TaskSpec:
    spec = common_pb2.TaskSpec()
    spec.CopyFrom(client.get_task(task_id).spec)
    spec.schedule.fixed_rate.anchor_ms = anchor_ms
    return spec


def _held(gate: Gate, n: int) -> dict[str, tuple[int, int]] | None:
    """The runs that stamped `held`, once there are `n` of them."""
    held = gate.stamps_of("held")
    return held if len(held) == n else None


def kept(client: Client, task_id: str, held: set[str]) -> int:
    """How many executions the task holds, read once; every held run must be there and running."""
    xs = runs_of(client, task_id)
    by_id = {e.execution_id: e for e in xs}
    assert all(eid in by_id and by_id[eid].state == RUNNING for eid in held), xs
    return len(xs)
