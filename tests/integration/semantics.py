"""What the real-process semantics tests read and build alike, so that they read it one way.

The modules that check each promise of docs/scheduling.md on real processes (test_schedule_kinds.py,
test_overlap.py, test_run_semantics.py, test_failover_semantics.py, test_operations_semantics.py,
test_outage_kinds.py, test_dst_real.py, test_execution.py) look at the same things: a task's executions,
its fire ledger (`explain_task`), an execution's end, a payload's own stamps of when it ran. Each module
keeps what is its own (its payloads' exit rules, its fixtures, its checks); what is here is the part two
or more of them read or build the same way, so that a fix to how one of them is read (a record's name, a
stamp line being written) is made once.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cronraft.client import Client, build_spec, command
from cronraft.proto.v1 import common_pb2
from cronraft.raft.records import TERMINAL_STATES

from .harness import wait_for

# -- time --------------------------------------------------------------------------------------------


def now_ms() -> int:
    """The machine's wall clock in ms: the clock every process here schedules by."""
    return int(time.time() * 1000)


def next_second(after_ms: int) -> int:
    """The first whole second after `after_ms`: a nominal time of a 1 s schedule."""
    return (after_ms // 1000 + 1) * 1000


def time_of_day(ms: int) -> str:
    """`ms` as a calendar's time-of-day bound (UTC, HH:MM:SS)."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S")


# -- tasks and executions ----------------------------------------------------------------------------


def create_task_with_policies(
    client: Client,
    name: str,
    schedule: common_pb2.Schedule,
    payload: common_pb2.Payload,
    *,
    start_deadline_ms: int = 0,
    depends_on: Sequence[str] = (),
    dependency_deadline_ms: int = 0,
    **kw: Any,
) -> common_pb2.Task:
    """A task from `create_task`'s keyword arguments plus the policies only a whole spec carries (a
    start deadline, upstream tasks and how long to wait for them): `create_task` has no argument for
    them, so the spec is built and completed here."""
    spec = build_spec(name, schedule, payload, **kw)
    spec.start_deadline_ms = start_deadline_ms
    spec.dependency_deadline_ms = dependency_deadline_ms
    for upstream in depends_on:
        spec.depends_on.add(task_id=upstream)
    return client.create_task_spec(spec)


def runs_of(client: Client, task_id: str) -> list[common_pb2.Execution]:
    """The task's executions, oldest nominal time first (the execution id orders two of one time)."""
    return sorted(client.list_executions(task_id), key=lambda e: (e.nominal_time_ms, e.execution_id))


def executions_where(
    client: Client,
    task_id: str,
    pred: Callable[[list[common_pb2.Execution]], bool],
    what: str,
    timeout_s: float = 30,
) -> list[common_pb2.Execution]:
    """Wait until the task has executions and `pred` holds of them (by nominal time); returns them."""

    def matched() -> list[common_pb2.Execution] | None:
        xs = runs_of(client, task_id)
        return xs if xs and pred(xs) else None

    return wait_for(matched, timeout_s, what)


def only_execution(client: Client, task_id: str) -> common_pb2.Execution:
    """Wait for the task's execution; fails if it has more than one."""
    (ex,) = wait_for(lambda: list(client.list_executions(task_id)), 30, "the task's execution")
    return ex


def final_execution(client: Client, execution_id: str, timeout_s: float = 30) -> common_pb2.Execution:
    """The execution once it is in a terminal state (raft/records.py TERMINAL_STATES: the store's own
    set, so a state added there is waited for here too)."""

    def ended() -> common_pb2.Execution | None:
        e = client.get_execution(execution_id)
        return e if e.state in TERMINAL_STATES else None

    return wait_for(ended, timeout_s, f"execution {execution_id} to end")


def first_started_ms(e: common_pb2.Execution) -> int:
    """When the execution's first attempt started (the execution's own field when it has no attempts)."""
    return e.attempts[0].started_at_ms if e.attempts else e.started_at_ms


# -- the fire ledger ---------------------------------------------------------------------------------


def fire_ledger(client: Client, task_id: str) -> dict[int, common_pb2.FireRecord]:
    """The task's fire ledger up to a minute ahead (records of nominal times not yet due, such as the
    `outside_window` one after a window's end), by nominal time."""
    resp = client.explain_task(task_id, from_=1, to=now_ms() + 60_000, limit=1000)
    return {r.nominal_time_ms: r for r in resp.records}


def outcome_name(rec: common_pb2.FireRecord) -> str:
    """A ledger record's outcome as `schedctl explain` prints it (FIRED, MISSED_DOWNTIME, ...)."""
    return common_pb2.FireOutcome.Name(rec.outcome)


# -- processes ---------------------------------------------------------------------------------------


def _proc_stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces and parentheses)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_alive(pid: int) -> bool:
    """The process exists and is not a zombie (a killed process waits for its parent to reap it)."""
    try:
        state = _proc_stat(pid)[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) process `pid` used so far, in seconds."""
    fields = _proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- payloads that stamp what they did ---------------------------------------------------------------
#
# A payload's own record of when it ran is what "ran once" and "ran one after another" are checked
# against: the store says what the leader thinks happened, the stamps what the processes did. Stamps use
# CLOCK_MONOTONIC, one clock for every process of the machine (libfaketime leaves it alone).

# A gated payload: stamp "start", wait for the gate file (at most 60 s: never a process left behind),
# stamp "end". Each stamp is `what execution_id pid monotonic_ns`.
_GATED_STAMP = (
    "import os, signal, sys, time\n"
    "stamps, gate = sys.argv[1], sys.argv[2]\n"
    "eid = os.environ['CRONRAFT_EXECUTION_ID']\n"
    "def stamp(what):\n"
    "    with open(stamps, 'a') as f:\n"
    "        f.write(f'{what} {eid} {os.getpid()} {time.monotonic_ns()}\\n')\n"
)
# With a stop time: asked to stop (SIGTERM, as its worker does first), it stamps "term", takes `stop_s`
# to stop, as a payload that cleans up does, stamps "exit" and exits as killed: never "end".
_GATED_ON_TERM = (
    "stop_s = float(sys.argv[3])\n"
    "def stop(signum, frame):\n"
    "    stamp('term')\n"
    "    time.sleep(stop_s)\n"
    "    stamp('exit')\n"
    "    os._exit(128 + signum)\n"
    "signal.signal(signal.SIGTERM, stop)\n"
)
_GATED_RUN = (
    "stamp('start')\n"
    "deadline = time.monotonic() + 60\n"
    "while not os.path.exists(gate) and time.monotonic() < deadline:\n"
    "    time.sleep(0.02)\n"
    "stamp('end')\n"
)


@dataclass
class Stamp:
    """One gated run as its process stamped it."""

    pid: int
    start_ns: int
    end_ns: int | None = None  # it ran to its end
    term_ns: int | None = None  # it was asked to stop
    exit_ns: int | None = None  # it stopped as asked


@dataclass
class Gate:
    """The stamps file and gate of gated payloads: a run lasts until the test opens the gate, whatever
    the machine's speed, and a run that was killed never stamps its end, even after the gate opens.

    `stop_s`: None, the payload dies of SIGTERM at once; a number, it takes that long to stop."""

    stamps: Path
    gate: Path
    stop_s: float | None = None

    def payload(self, stop_s: float | None = None) -> common_pb2.Payload:
        """The gated payload; `stop_s` instead of the gate's own stop time."""
        stop = self.stop_s if stop_s is None else stop_s
        if stop is None:
            return command(sys.executable, "-c", _GATED_STAMP + _GATED_RUN, str(self.stamps), str(self.gate))
        script = _GATED_STAMP + _GATED_ON_TERM + _GATED_RUN
        return command(sys.executable, "-c", script, str(self.stamps), str(self.gate), str(stop))

    def open(self) -> None:
        self.gate.touch()

    def stamps_of(self, what: str) -> dict[str, tuple[int, int]]:
        """Execution id -> (pid, monotonic ns) of its `what` stamp ("start", "end", "term", "exit")."""
        out: dict[str, tuple[int, int]] = {}
        if self.stamps.exists():
            for line in self.stamps.read_text().splitlines():
                parts = line.split()
                if len(parts) == 4 and parts[0] == what:  # else a line being written
                    out[parts[1]] = (int(parts[2]), int(parts[3]))
        return out

    def runs(self) -> dict[str, Stamp]:
        """Execution id -> its process's stamps, as the processes wrote them (started ones only)."""
        out = {eid: Stamp(pid, ns) for eid, (pid, ns) in self.stamps_of("start").items()}
        for what in ("end", "term", "exit"):
            for eid, (_, ns) in self.stamps_of(what).items():
                if eid in out:
                    setattr(out[eid], f"{what}_ns", ns)
        return out


# An attempt payload: stamp `execution_id attempt monotonic_ns` as its first act, wait for the gate if
# one is given (at most 60 s), then exit 1 while its attempt is below `succeed_from`, else 0.
_ATTEMPT_PAYLOAD = (
    "import os, sys, time\n"
    "stamps, gate, succeed_from = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
    "attempt = int(os.environ['CRONRAFT_ATTEMPT'])\n"
    "with open(stamps, 'a') as f:\n"
    "    f.write(f\"{os.environ['CRONRAFT_EXECUTION_ID']} {attempt} {time.monotonic_ns()}\\n\")\n"
    "deadline = time.monotonic() + 60\n"
    "while gate and not os.path.exists(gate) and time.monotonic() < deadline:\n"
    "    time.sleep(0.02)\n"
    "sys.exit(0 if attempt >= succeed_from else 1)\n"
)


@dataclass
class Stamps:
    """The start stamps of attempt payloads (each attempt's start, so a second start of one attempt is
    seen), and their gate."""

    path: Path
    gate: Path

    def payload(self, *, gated: bool = False, succeed_from: int = 1) -> common_pb2.Payload:
        gate = str(self.gate) if gated else ""
        return command(sys.executable, "-c", _ATTEMPT_PAYLOAD, str(self.path), gate, str(succeed_from))

    def open(self) -> None:
        self.gate.touch()

    def starts(self) -> list[tuple[str, int, int]]:
        """(execution id, attempt, monotonic ns) of every start, in the order written."""
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:  # else a line being written
                rows.append((parts[0], int(parts[1]), int(parts[2])))
        return rows

    def started(self, execution_id: str) -> bool:
        return any(eid == execution_id for eid, _, _ in self.starts())
