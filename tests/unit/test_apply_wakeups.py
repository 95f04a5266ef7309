"""raft.apply_thread: a lingering group sleeps on its doorbell, not on the queue, so the entries that reach a
follower one at a time under a steady load do not wake its apply thread one by one (issue 16: each wake-up
costs 60-150 us of CPU on our machines). What ends the lingering still does: a group's room filled.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Container, Sequence
from pathlib import Path

import pytest

from cronraft.raft import apply_thread
from cronraft.raft.apply_thread import ApplyThread


class _Recorder:
    def __init__(self) -> None:
        self.groups: list[list[int]] = []

    def one(self, index: int, payload: bytes) -> bytes | None:
        self.groups.append([index])
        return b"r"

    def many(self, entries: Sequence[tuple[int, bytes]], unread: Container[int]) -> list[bytes | None]:
        self.groups.append([i for i, _ in entries])
        return [b"r" for _ in entries]


def _switches(tid: int) -> int:
    """The thread's voluntary context switches so far: one each time it slept and was woken."""
    status = Path(f"/proc/self/task/{tid}/status").read_text()
    return int(status.split("voluntary_ctxt_switches:")[1].split()[0])


def _until(check: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")
def test_entries_queued_while_a_group_lingers_do_not_wake_the_thread() -> None:
    rec = _Recorder()
    thread = ApplyThread(rec.one, apply_entries=rec.many, linger_s=30.0)
    thread.start(0)
    try:
        thread.stage(1, b"x" * 100)
        thread.release_staged()
        _until(thread._queue.empty)  # the first entry taken: the group lingers
        worker = thread.thread
        assert worker is not None and worker.native_id is not None
        before = _switches(worker.native_id)
        for index in range(2, 22):  # one entry per tick, as a follower learns them
            thread.stage(index, b"x" * 100)
            thread.release_staged()
            time.sleep(0.002)  # pacing, as ticks are: the thread may run (and it did, once per entry)
        woken = _switches(worker.native_id) - before
        assert thread.wait_applied(21)  # rings: the group ends now, not after 30 s
    finally:
        thread.stop()
    assert rec.groups == [list(range(1, 22))]
    assert woken <= 2  # waiting on the queue, it woke for each of the 20 entries


def test_a_lingering_group_ends_once_its_room_is_filled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apply_thread, "GROUP_MAX_ENTRIES", 5)
    rec = _Recorder()
    thread = ApplyThread(rec.one, apply_entries=rec.many, linger_s=30.0)
    thread.start(0)
    try:
        thread.stage(1, b"x")
        thread.release_staged()
        _until(lambda: thread._room is not None)
        began = time.monotonic()
        for index in range(2, 6):
            thread.stage(index, b"x")
            thread.release_staged()
        _until(lambda: thread.applied_index(5) >= 5)  # not `wait_applied`: that would ring by itself
        assert time.monotonic() - began < 10.0  # not after the 30 s linger
    finally:
        thread.stop()
    assert rec.groups == [[1, 2, 3, 4, 5]]


def test_stop_ends_a_linger() -> None:
    rec = _Recorder()
    thread = ApplyThread(rec.one, apply_entries=rec.many, linger_s=30.0)
    thread.start(0)
    thread.stage(1, b"x")
    thread.release_staged()
    _until(lambda: thread._room is not None)
    worker = thread.thread
    began = time.monotonic()
    stopper = threading.Thread(target=thread.stop)
    stopper.start()
    stopper.join(10)
    assert not stopper.is_alive() and worker is not None and not worker.is_alive()
    assert time.monotonic() - began < 10.0
