"""A worker whose leader freezes while the worker's stream is full of a payload's output, with real
processes: 3 `schedd` nodes and one `schedworker`.

A SIGSTOPped leader (or one behind a partition that drops packets) sends no reset and reads nothing: the
worker's writes fill gRPC's send window and the next one waits for a window update that never comes. The
worker must still see the stream as dead within its stale-stream timeout (client/worker/session.py,
`stale_after_s`) and reconnect to the new leader before its leases expire; before it bounded its writes,
the heartbeat loop waited behind the stuck output write for as long as the leader stayed frozen.

What the worker had sent on the dead stream is lost with it (a frozen leader read none of it): the logs
say so where it was, on the new stream (client/worker/live_output.py, `doubt_note`: up to N bytes may be
missing), and what waited for a stream is sent there, after a note of what was dropped beyond its bound.
Before, the bytes sent went silently (and counted towards the log's cap), and the gap's note, if any,
named fewer bytes than were missing.

Its own cluster: the test pauses the leader (tests/integration/conftest.py, module_clusters).
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cronraft.client import Client, at, command
from cronraft.proto.v1 import common_pb2

from .harness import Cluster, NodeProc, started, wait_for
from .semantics import final_execution, only_execution

pytestmark = pytest.mark.integration

LEASE_TTL_MS = 6000
HEARTBEAT_MS = 500
# The worker's stale-stream timeout (client/worker/session.py): min(max(1.5 x heartbeat, 1 s), TTL / 3).
STALE_AFTER_S = min(max(1.5 * HEARTBEAT_MS / 1000, 1.0), LEASE_TTL_MS / 3000)
# Once it saw the stream dead and a leader is elected: a backoff (at most 0.5 s) and a redirect. Less
# than the 3 s a Hello to the frozen node would cost (agent._HELLO_TIMEOUT_S), had it not been avoided.
PROMPT_S = 2.0
# A frozen peer takes about 4 MiB of a stream before the sender's writes wait (gRPC's window on loopback,
# measured with a SIGSTOPped grpc.aio server), and the worker sends at most the log's cap, 1 MiB, of each
# stream of an attempt: PAYLOADS payloads writing FAST_BYTES (past the cap) to both streams fill it.
PAYLOADS = 4
FAST_BYTES = 3 << 19
LOG_CAP = 1 << 20  # what the log keeps of each stream of an attempt (docs/cli.md, "Output logs")
# Each payload writes these (no run of them repeats: a splice shows), then "still here" lines.
OUT = hashlib.shake_256(b"out").digest(FAST_BYTES)
ERR = hashlib.shake_256(b"err").digest(FAST_BYTES)
LINE = b"still here\n"
# The worker's notes in a log: up to N bytes sent on a stream that broke may be missing; N bytes dropped.
DOUBT = re.compile(rb"\n\[cronraft: up to (\d+) bytes of output before this may be missing: [^\]]*\]\n")
GAP = re.compile(rb"\n\[cronraft: (\d+) bytes of output not kept here: [^\]]*\]\n")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, module_clusters: list[Cluster]) -> Cluster:
    # The TTL leaves room for an election (1-2 s with election_timeout_ms 1000) after the leader freezes.
    c = Cluster(
        tmp_path_factory.mktemp("stream-stall"),
        n=3,
        lease_ttl_ms=LEASE_TTL_MS,
        heartbeat_interval_ms=HEARTBEAT_MS,
    )
    module_clusters.append(c)
    return started(c)


def _chatty(ledger: Path, gate: Path, stop: Path) -> list[str]:
    """A payload that records its start in `ledger` (execution id, attempt), waits for `gate`, writes
    OUT to stdout and ERR to stderr as fast as the pipes take them, then LINE to stdout every 50 ms until
    `stop` exists."""
    code = (
        "import hashlib, os, sys, time\n"
        f"with open({str(ledger)!r}, 'a') as f:\n"
        "    f.write(os.environ['CRONRAFT_EXECUTION_ID'] + ' ' + os.environ['CRONRAFT_ATTEMPT'] + chr(10))\n"
        f"while not os.path.exists({str(gate)!r}):\n"
        "    time.sleep(0.01)\n"
        f"out = hashlib.shake_256(b'out').digest({FAST_BYTES})\n"
        f"err = hashlib.shake_256(b'err').digest({FAST_BYTES})\n"
        "for i in range(0, len(out), 65536):\n"
        "    sys.stdout.buffer.write(out[i : i + 65536]); sys.stdout.buffer.flush()\n"
        "    sys.stderr.buffer.write(err[i : i + 65536]); sys.stderr.buffer.flush()\n"
        f"while not os.path.exists({str(stop)!r}):\n"
        f"    sys.stdout.buffer.write({LINE!r}); sys.stdout.buffer.flush()\n"
        "    time.sleep(0.05)\n"
    )
    return [sys.executable, "-c", code]


def _leads(node: NodeProc) -> bool:
    st = node.status()
    return st.is_leader and st.ready


def _workers_on(node: NodeProc) -> int:
    """The workers connected to `node` while it leads (0 if it does not)."""
    st = node.status()
    return st.connected_workers if st.is_leader and st.ready else 0


@pytest.fixture
def frozen(cluster: Cluster) -> Iterator[list[NodeProc]]:
    """The nodes a test pauses (append them): resumed at its end."""
    paused: list[NodeProc] = []
    yield paused
    for node in paused:
        cluster.core.resume(node.node_id)


def test_a_worker_reconnects_when_its_leader_freezes_with_the_stream_full_of_output(
    cluster: Cluster, tmp_path: Path, frozen: list[NodeProc]
) -> None:
    """The leader is SIGSTOPped, then the payloads write output as fast as they can: the worker's output
    write waits for a window that never opens. The worker reconnects to the new leader within the lease
    TTL of the freeze (later, its leases would have expired, their attempts killed by its self-fencing
    and run again), and promptly: within PROMPT_S of the later of the election and its stale-stream
    timeout. The attempts go on, their leases renewed by the new leader: each ends succeeded, in its
    first attempt, started once (the payloads' own ledger)."""
    ledger, gate, stop = tmp_path / "ledger", tmp_path / "gate", tmp_path / "stop"
    due = at(int(time.time() * 1000) + 300)
    payload = command(*_chatty(ledger, gate, stop))
    with Client(cluster.servers, timeout_s=30) as client:
        tasks = [client.create_task(f"chatty-{i}", due, payload) for i in range(PAYLOADS)]
        execution_ids = sorted(only_execution(client, t.task_id).execution_id for t in tasks)
    try:
        wait_for(lambda: len(_starts(ledger)) == PAYLOADS, 30, "every payload's start")
        old = cluster.wait_leader()
        frozen.append(old)
        assert cluster.core.pause(old.node_id)
        froze = time.monotonic()
        gate.touch()  # the output begins while nobody reads the stream
        others = [n for n in cluster.nodes if n is not old]
        new = wait_for(lambda: next((n for n in others if _leads(n)), None), 15, "a new leader")
        elected = time.monotonic() - froze
        # Within the TTL of the freeze: later, the leases of the running attempts would have run out.
        left = froze + LEASE_TTL_MS / 1000 - time.monotonic()
        wait_for(lambda: _workers_on(new) >= 1, left, "the worker on the new leader within the lease TTL")
        back = time.monotonic() - froze
        print(
            f"new leader {new.node_id} at {elected:.2f} s after the freeze, the worker on it at {back:.2f} s"
        )
        # The write that waits began at the freeze, give or take the payloads' first writes.
        assert back <= max(elected, STALE_AFTER_S) + PROMPT_S
        with Client(",".join(n.grpc_address for n in others), timeout_s=30) as client:
            for execution_id in execution_ids:
                running = client.get_execution(execution_id)
                assert (running.state, running.attempt) == (common_pb2.EXECUTION_RUNNING, 1)
            # The payloads' lines, written after the reconnect, reach the logs: then they may end.
            wait_for(lambda: all(_goes_on(client, e) for e in execution_ids), 10, "output on the new stream")
            stop.touch()
            ended = [final_execution(client, execution_id, timeout_s=20) for execution_id in execution_ids]
    finally:
        gate.touch()
        stop.touch()
    assert [(ex.state, ex.attempt) for ex in ended] == [(common_pb2.EXECUTION_SUCCEEDED, 1)] * PAYLOADS
    assert _starts(ledger) == [(execution_id, 1) for execution_id in execution_ids], "each ran once"
    with Client(",".join(n.grpc_address for n in others), timeout_s=30) as client:
        for execution_id in execution_ids:
            page = client.get_execution_logs(execution_id, max_bytes=4 << 20)
            assert page.truncated == (max(len(page.stdout), len(page.stderr)) >= LOG_CAP)
            _unspliced(page.stdout, OUT + LINE * 1000)
            _unspliced(page.stderr, ERR)


def _goes_on(client: Client, execution_id: str) -> bool:
    """The execution's stdout log has output written after the reconnect (its payload's lines), or is
    full."""
    stdout = client.get_execution_logs(execution_id, max_bytes=4 << 20).stdout
    return stdout.endswith(LINE) or len(stdout) >= LOG_CAP


def _unspliced(log: bytes, written: bytes) -> None:
    """`log` is `written` in order, with a note wherever bytes are missing, saying how many: the bytes
    after a doubt note of N (and a gap note of D) continue at most N + D (and at least D) bytes after
    those before it; without a note, right after them. Its last run may be cut (the cap)."""
    pos = off = 0  # in the log, in what was written
    doubt = dropped = 0  # what the notes just passed say may be / is missing
    while pos < len(log):
        if note := DOUBT.match(log, pos):
            doubt += int(note.group(1))
        elif note := GAP.match(log, pos):
            dropped += int(note.group(1))
        if note:
            pos = note.end()
            continue
        ahead = [m.start() for m in (DOUBT.search(log, pos), GAP.search(log, pos)) if m is not None]
        run = log[pos : min(ahead, default=len(log))]
        head = run[:64]
        at = written.find(head, off + dropped, off + dropped + doubt + len(head))
        assert at >= 0, f"log bytes {pos}-{pos + len(run)} do not follow at most {doubt} + {dropped} bytes on"
        assert written[at : at + len(run)] == run, f"log bytes {pos}-{pos + len(run)} are spliced"
        pos, off, doubt, dropped = pos + len(run), at + len(run), 0, 0


def _starts(ledger: Path) -> list[tuple[str, int]]:
    """The payloads' starts, as their ledger holds them (sorted)."""
    if not ledger.exists():
        return []
    rows = (line.split() for line in ledger.read_text().splitlines())
    return sorted((eid, int(attempt)) for eid, attempt in rows)
