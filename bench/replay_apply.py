"""Apply a real run's Raft log again, in one process: the apply cost of a workload's own entries.

bench/perf_recurring.py drives W5's fire path with a fake worker; the entries a real cluster commits
differ (a real worker's start and finish times spread the histograms, entries hold what the group
committer gathered, the retention sweep runs every second), and a real node's apply thread costs about
twice perf_recurring's figure. This takes a node's journal from a kept run (`--journal`, or `--record
TASKS SECONDS`: a W5 run with `--keep` first), applies its first third to a fresh store (the tasks, the
warm-up) and times the rest: as a leader does (`--group 1`: one transaction per entry, results built) or
as a follower (`--group N`: N entries per transaction, results nobody reads).

Two kinds of figures:
- CPU microseconds per execution (process time; the machine's other work shows in it: `--repeat`
  gives min and median);
- deterministic counts per execution (`--counts`): LMDB gets, puts, deletes, scans and the items the
  scans read against those they handed out. These do not move with the machine's load: a change that
  removes work shows in them exactly, even on a busy machine.

A third (`--contend DUTY`): the apply runs in a thread beside another Python thread busy DUTY of the time
(0.3: 0.3 ms of bytecode, then 0.7 ms asleep), as a leader's apply thread runs beside its event loop and
a follower's beside its Raft thread. Each py-lmdb put, delete and commit releases the GIL and takes it
back (a get does not), and with a thread waiting for the GIL each of those is a hand-off: the apply
thread's own CPU per execution (thread time, not the busy thread's) shows what that costs.

Usage: .venv/bin/python bench/replay_apply.py --journal /tmp/cronraft-bench-XXXX/node1/raft/raft.journal
       [--group 8] [--repeat 3] [--counts] [--profile] [--contend 0.3]
       .venv/bin/python bench/replay_apply.py --record 1000 15 [...]   (runs bench/w5_sustained.py --keep)
"""

from __future__ import annotations

import argparse
import cProfile
import pickle
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cronraft.proto.v1 import commands_pb2
from cronraft.raft import store
from cronraft.raft.state import StateMachine
from cronraft.raft.store import LmdbKV

WARM_FRACTION = 3  # the first third of the entries is applied before the timing starts
Entry = tuple[int, bytes]


def read_journal(path: Path) -> list[Entry]:
    """Our entries (index, payload) of a pysyncobj journal, in order (no-op and membership entries left
    out: they never reach our apply)."""
    from pysyncobj.journal import FileJournal  # benchmarks only: the journal's reader

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "journal"
        shutil.copy(path, copy)
        journal = FileJournal(str(copy))
        try:
            out = []
            for i in range(len(journal)):
                entry, index, _term = journal[i]
                if entry[0] != 0:
                    continue
                call = pickle.loads(entry[1:])  # pysyncobj's (method id, args): args[0] is our payload
                out.append((index, call[1][0]))
            return out
        finally:
            journal._destroy()


def record(tasks: int, seconds: int) -> Path:
    """Run W5 with --keep and return node1's journal."""
    out = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).parent / "w5_sustained.py"),
            "--runs",
            "1",
            "--tasks",
            str(tasks),
            "--seconds",
            str(seconds),
            "--keep",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = re.search(r"keeping the cluster's directory: (\S+)", out)
    if found is None:
        raise SystemExit("w5_sustained.py did not say where it kept the cluster")
    return Path(found.group(1)) / "node1" / "raft" / "raft.journal"


def executions(entries: list[Entry]) -> int:
    """Executions that ended in these entries (Complete commands): the unit of every figure."""
    return sum(
        1
        for _, payload in entries
        for c in commands_pb2.CommandBatch.FromString(payload).commands
        if c.WhichOneof("body") == "complete"
    )


def apply_all(sm: StateMachine, entries: list[Entry], group: int) -> None:
    if group == 1:
        for index, payload in entries:
            sm.apply_entry(index, payload, wanted=True)
        return
    for k in range(0, len(entries), group):
        part = entries[k : k + group]
        sm.apply_entries(part, unread=frozenset(index for index, _ in part))


class Counts:
    """LMDB calls counted on every LmdbTxn while installed (the store's methods wrapped)."""

    def __init__(self) -> None:
        self.c: Counter[str] = Counter()
        self.by_db: Counter[tuple[str, str]] = Counter()  # (call, sub-database): where the calls go
        self._saved: dict[str, Any] = {}

    def install(self) -> None:
        c, by_db = self.c, self.by_db
        txn = store.LmdbTxn
        names = ("get", "put", "insert", "delete", "scan", "_read_chunk_unchecked", "first")
        self._saved = {n: getattr(txn, n) for n in names}
        get, put, insert, delete, scan, chunk, first = (self._saved[n] for n in names)

        def counted_get(self_: Any, *a: Any) -> Any:
            c["get"] += 1
            by_db["get", a[0]] += 1
            return get(self_, *a)

        def counted_put(self_: Any, *a: Any) -> Any:
            c["put"] += 1
            by_db["put", a[0]] += 1
            return put(self_, *a)

        def counted_insert(self_: Any, *a: Any) -> Any:  # a put where the key is absent: one call
            c["insert"] += 1
            by_db["insert", a[0]] += 1
            return insert(self_, *a)

        def counted_delete(self_: Any, *a: Any) -> Any:
            c["delete"] += 1
            by_db["delete", a[0]] += 1
            return delete(self_, *a)

        def counted_scan(self_: Any, *a: Any, **k: Any) -> Iterator[tuple[bytes, bytes]]:
            c["scan"] += 1
            by_db["scan", a[0]] += 1
            for item in scan(self_, *a, **k):
                c["scan_yielded"] += 1
                yield item

        def counted_first(self_: Any, *a: Any, **k: Any) -> Any:  # one seek (Txn.first)
            c["first"] += 1
            by_db["first", a[0]] += 1
            return first(self_, *a, **k)

        def counted_chunk(self_: Any, *a: Any) -> Any:
            out = chunk(self_, *a)
            c["scan_chunks"] += 1
            c["scan_read"] += len(out)
            return out

        # Set by name, as `remove` restores them: the wrappers pass their arguments through untyped.
        wrappers = {
            "get": counted_get,
            "put": counted_put,
            "insert": counted_insert,
            "delete": counted_delete,
            "scan": counted_scan,
            "_read_chunk_unchecked": counted_chunk,
            "first": counted_first,
        }
        for name, wrapper in wrappers.items():
            setattr(txn, name, wrapper)

    def remove(self) -> None:
        for name, fn in self._saved.items():
            setattr(store.LmdbTxn, name, fn)


def contended(entries: list[Entry], group: int, duty: float) -> tuple[float, float]:
    """`one_run`'s figure with the apply in a thread beside a Python thread busy `duty` of the time
    (module docstring): (the apply thread's CPU, its wall time) in microseconds per execution."""
    stop = threading.Event()

    def busy() -> None:
        spin = 0.001 * duty
        while not stop.is_set():
            t = time.perf_counter()
            while time.perf_counter() - t < spin:
                sum(range(50))  # bytecode, holding the GIL
            time.sleep(0.001 - spin)

    out: list[tuple[float, float]] = []
    other = threading.Thread(target=busy, daemon=True)
    other.start()
    worker = threading.Thread(target=lambda: out.append(_timed(entries, group, time.thread_time)))
    worker.start()
    worker.join()
    stop.set()
    other.join()
    return out[0]


@contextmanager
def _warmed(entries: list[Entry], group: int) -> Iterator[tuple[StateMachine, list[Entry]]]:
    """A fresh store with the warm-up part applied: (its state machine, the entries left to time)."""
    with tempfile.TemporaryDirectory() as tmp:
        kv = LmdbKV(Path(tmp) / "state", map_size=1 << 30)
        try:
            # No features on a fresh store: the log's own RaiseFeatures sets them, as on a real node.
            sm = StateMachine(kv, fresh_features=frozenset())
            warm = len(entries) // WARM_FRACTION
            apply_all(sm, entries[:warm], group)
            yield sm, entries[warm:]
        finally:
            kv.close()


def _timed(entries: list[Entry], group: int, clock: Any) -> tuple[float, float]:
    """(CPU by `clock`, wall) microseconds per execution of the timed part, on a fresh store."""
    with _warmed(entries, group) as (sm, timed):
        n = max(1, executions(timed))
        c, w = clock(), time.perf_counter()
        apply_all(sm, timed, group)
        return (clock() - c) / n * 1e6, (time.perf_counter() - w) / n * 1e6


def one_run(
    entries: list[Entry], group: int, *, counts: Counts | None, prof: cProfile.Profile | None
) -> float:
    """CPU microseconds per execution of the timed part (and its counts, if asked)."""
    with _warmed(entries, group) as (sm, timed):
        if counts is not None:
            counts.install()
        if prof is not None:
            prof.enable()
        t = time.process_time()
        try:
            apply_all(sm, timed, group)
        finally:
            dt = time.process_time() - t
            if prof is not None:
                prof.disable()
            if counts is not None:
                counts.remove()
        return dt / max(1, executions(timed)) * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--journal", type=Path, help="a node's raft.journal (a kept run's node1/raft/raft.journal)"
    )
    src.add_argument("--record", nargs=2, type=int, metavar=("TASKS", "SECONDS"), help="run W5 --keep first")
    p.add_argument("--group", type=int, default=1, help="entries per transaction (1: a leader's way)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--counts", action="store_true", help="LMDB calls per execution (deterministic)")
    p.add_argument("--profile", action="store_true")
    p.add_argument(
        "--contend", type=float, metavar="DUTY", help="also apply beside a thread busy DUTY (0-1) of the time"
    )
    args = p.parse_args()

    journal = args.journal if args.journal is not None else record(*args.record)
    entries = read_journal(journal)
    timed = entries[len(entries) // WARM_FRACTION :]
    n = executions(timed)
    print(f"{journal}: {len(entries)} entries, timed {len(timed)} with {n} executions, group {args.group}")
    figures = [one_run(entries, args.group, counts=None, prof=None) for _ in range(args.repeat)]
    print(
        f"apply: min {min(figures):.0f} us, median {statistics.median(figures):.0f} us per execution "
        f"({args.repeat} run{'s' if args.repeat > 1 else ''})"
    )
    if args.contend is not None:
        duty = min(1.0, max(0.0, args.contend))
        alone = [_timed(entries, args.group, time.thread_time) for _ in range(args.repeat)]
        beside = [contended(entries, args.group, duty) for _ in range(args.repeat)]
        for name, runs in (("alone", alone), (f"beside a thread busy {duty:.0%}", beside)):
            cpu = statistics.median(r[0] for r in runs)
            wall = statistics.median(r[1] for r in runs)
            print(f"apply thread {name}: CPU {cpu:.0f} us, wall {wall:.0f} us per execution (median)")
    if args.counts:
        counts = Counts()
        one_run(entries, args.group, counts=counts, prof=None)
        per = {k: round(v / n, 2) for k, v in sorted(counts.c.items())}
        print("per execution:", " ".join(f"{k} {v}" for k, v in per.items()))
        for db in sorted({db for _, db in counts.by_db}):
            calls = {op: counts.by_db[op, db] / n for op, d in counts.by_db if d == db}
            print(f"  {db:<20}", " ".join(f"{op} {v:.2f}" for op, v in sorted(calls.items()) if v >= 0.005))
    if args.profile:
        prof = cProfile.Profile()
        one_run(entries, args.group, counts=None, prof=prof)
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
