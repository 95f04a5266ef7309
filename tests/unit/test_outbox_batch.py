"""The worker outbox's segments (`Outbox.put_many`): results written together share one flush, appended
to the open segment (made like a single file); loaded back like single results, even after a crash
mid-append; a segment is deleted only once it is closed and every result in it was acknowledged."""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import pytest

from cronraft.client.worker import outbox as outbox_module
from cronraft.client.worker import results as results_module
from cronraft.client.worker.outbox import AttemptKey, Outbox, result_key
from cronraft.client.worker.results import STORE_LINGER_S, Results
from cronraft.client.worker.session import Session
from cronraft.proto.v1 import common_pb2, worker_pb2


class FakeCall:
    """A stream nothing is written to (Session needs one)."""


def result(i: int, index: int = 1, outcome: int = common_pb2.ATTEMPT_SUCCEEDED) -> common_pb2.AttemptResult:
    return common_pb2.AttemptResult(
        execution_id=f"E{i:03d}",
        token=common_pb2.FencingToken(term=1, index=index),
        outcome=common_pb2.AttemptOutcome.ValueType(outcome),
    )


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_a_batch_is_one_file_and_survives_a_restart(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    batch = [result(i) for i in range(5)]
    box.put_many(batch)
    assert len(files(tmp_path)) == 1 and files(tmp_path)[0].endswith(".result")
    assert len(box) == 5 and all(result_key(r) in box for r in batch)
    reloaded = Outbox(tmp_path)
    assert sorted(reloaded.pending(), key=lambda r: r.execution_id) == batch


def test_a_batch_file_goes_when_its_last_result_is_acknowledged(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    batch = [result(i) for i in range(3)]
    box.put_many(batch)
    assert box.remove([result_key(batch[0]), result_key(batch[1])]) == 2
    assert len(files(tmp_path)) == 1  # one result still unacknowledged
    # A restart before the last ack loads the whole file again: the acknowledged ones are resent
    # (the leader acknowledges them again), never lost.
    assert len(Outbox(tmp_path)) == 3
    assert box.remove([result_key(batch[2]), ("unknown", 0, 0)]) == 1
    assert files(tmp_path) == []
    assert len(Outbox(tmp_path)) == 0


def test_forget_names_the_files_an_acknowledgement_empties(tmp_path: Path) -> None:
    """Results.on_acks deletes files on the loop when they are few, whatever the number of results:
    forget() does the bookkeeping and names the files; a batch file only once all its results went."""
    box = Outbox(tmp_path)
    batch = [result(i) for i in range(40)]
    box.put_many(batch)
    box.put(result(99))
    assert box.forget([result_key(r) for r in batch[:39]]) == (39, [])
    removed, doomed = box.forget([result_key(batch[39]), result_key(result(99)), ("unknown", 0, 0)])
    assert removed == 2 and len(doomed) == 2 and "E099.1.1.result" in doomed
    assert len(box) == 0 and len(files(tmp_path)) == 2  # not deleted yet: delete() does the I/O
    box.delete(doomed)
    assert files(tmp_path) == []


def test_one_result_keeps_the_single_file_format(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    box.put_many([result(1)])
    assert files(tmp_path) == ["E001.1.1.result"]
    box.put_many([])
    assert files(tmp_path) == ["E001.1.1.result"]


def test_the_newest_copy_of_an_attempt_wins(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    box.put_many([result(1), result(2)])
    failed = result(1, outcome=common_pb2.ATTEMPT_FAILED)
    box.put(failed)  # a single file replaces the batch's copy
    assert Outbox(tmp_path).get(result_key(failed)) == failed
    newer = result(1, outcome=common_pb2.ATTEMPT_TIMED_OUT)
    box.put_many([newer, result(3)])  # a later batch replaces the single file (deleted)
    assert "E001.1.1.result" not in files(tmp_path)
    reloaded = Outbox(tmp_path)
    assert reloaded.get(result_key(newer)) == newer
    assert len(reloaded) == 3
    # every copy of E001 is superseded or acknowledged: removing the rest empties the directory
    assert box.remove([result_key(r) for r in (newer, result(2), result(3))]) == 3
    assert files(tmp_path) == []


def test_writes_append_to_the_open_segment_with_one_flush_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file and a directory fsync for the first write only; each later one is an append and an
    fdatasync (a crash after it loses nothing: another Outbox loads the file as it is)."""
    flushes: list[str] = []
    fsync, fdatasync = os.fsync, os.fdatasync
    monkeypatch.setattr(os, "fsync", lambda fd: (flushes.append("fsync"), fsync(fd))[1])
    monkeypatch.setattr(os, "fdatasync", lambda fd: (flushes.append("fdatasync"), fdatasync(fd))[1])
    box = Outbox(tmp_path)
    box.put_many([result(1), result(2)])
    assert flushes == ["fsync", "fsync"]  # the file, the directory
    flushes.clear()
    box.put_many([result(3), result(4)])
    box.put_many([result(5)])  # a lone result joins the open segment too
    assert flushes == ["fdatasync", "fdatasync"]
    assert len(files(tmp_path)) == 1
    assert sorted(r.execution_id for r in Outbox(tmp_path).pending()) == [f"E00{i}" for i in range(1, 6)]


def test_an_open_segment_stays_until_closed_and_acknowledged(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    first = [result(1), result(2)]
    box.put_many(first)
    assert box.forget([result_key(r) for r in first], keep_open=True) == (2, [])
    assert len(files(tmp_path)) == 1 and box.segment_open  # the next write appends to it
    box.put_many([result(3), result(4)])
    box.close_segment()
    assert len(files(tmp_path)) == 1 and not box.segment_open  # two results left to acknowledge
    assert box.remove([result_key(result(3)), result_key(result(4))]) == 2
    assert files(tmp_path) == []
    box.put_many([result(5), result(6)])  # a new segment
    assert box.remove([result_key(result(5)), result_key(result(6))]) == 2
    assert files(tmp_path) == [] and not box.segment_open  # emptied without keep_open: closed, gone
    box.put_many([result(7), result(8)])
    box.forget([result_key(result(7)), result_key(result(8))], keep_open=True)
    box.close_segment()  # empty: goes at once
    assert files(tmp_path) == []


def test_a_segment_gives_way_to_a_new_one_after_segment_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "SEGMENT_S", 0.0)
    box = Outbox(tmp_path)

    def acknowledge(*indexes: int) -> None:  # as Results.on_acks under load
        box.delete(box.forget([result_key(result(i)) for i in indexes], keep_open=True)[1])

    box.put_many([result(1), result(2)])
    acknowledge(1)
    box.put_many([result(3), result(4)])
    assert len(files(tmp_path)) == 2  # the first still holds E002
    acknowledge(2)  # closed: it goes
    acknowledge(3, 4)  # open: it stays
    assert len(files(tmp_path)) == 1
    box.put_many([result(5), result(6)])  # the full, empty one goes as the new one is made
    assert len(files(tmp_path)) == 1
    assert sorted(r.execution_id for r in Outbox(tmp_path).pending()) == ["E005", "E006"]


def test_a_later_record_of_an_attempt_wins_within_a_segment(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    box.put_many([result(1), result(2)])
    failed = result(1, outcome=common_pb2.ATTEMPT_FAILED)
    box.put_many([failed, result(3)])
    reloaded = Outbox(tmp_path)
    assert reloaded.get(result_key(failed)) == failed and len(reloaded) == 3
    assert box.remove([result_key(r) for r in (failed, result(2), result(3))]) == 3
    assert files(tmp_path) == []


def test_a_segment_torn_by_a_crash_keeps_its_whole_records(tmp_path: Path) -> None:
    """A crash mid-append leaves part of a record: its results were never flushed, so never sent. The
    records before it were, and may be waiting for their acknowledgement: they load."""
    box = Outbox(tmp_path)
    box.put_many([result(1), result(2)])
    box.put_many([result(3), result(4)])
    (name,) = files(tmp_path)
    path = tmp_path / name
    path.write_bytes(path.read_bytes()[:-3])
    reloaded = Outbox(tmp_path)
    assert sorted(r.execution_id for r in reloaded.pending()) == ["E001", "E002", "E003"]
    assert files(tmp_path) == [name]
    # Garbage in place of the last record (a file system that lost the data, not the size): the same.
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20] + bytes(20))
    assert sorted(r.execution_id for r in Outbox(tmp_path).pending()) == ["E001", "E002"]


def earlier_batch_file(results: Sequence[common_pb2.AttemptResult]) -> bytes:
    """A batch file as an earlier release wrote it (whole, by rename): its magic, length-prefixed results."""
    parts = [b"CRONRAFT-OUTBOX-BATCH-1\n"]
    for r in results:
        data = r.SerializeToString()
        parts += [struct.pack(">I", len(data)), data]
    return b"".join(parts)


def test_an_earlier_releases_batch_file_loads_and_a_torn_one_is_moved_aside(tmp_path: Path) -> None:
    name = "_batch-00000000000000000001-1-0.result"
    (tmp_path / name).write_bytes(earlier_batch_file([result(1), result(2)]))
    box = Outbox(tmp_path)
    assert sorted(r.execution_id for r in box.pending()) == ["E001", "E002"]
    assert box.remove([result_key(result(1)), result_key(result(2))]) == 2
    assert files(tmp_path) == []
    (tmp_path / name).write_bytes(earlier_batch_file([result(1), result(2)])[:-3])
    assert len(Outbox(tmp_path)) == 0
    assert files(tmp_path) == [name + ".corrupt"]


class CountingOutbox(Outbox):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.writes: list[int] = []

    def put_many(
        self, results: Sequence[common_pb2.AttemptResult], keys: Sequence[AttemptKey] | None = None
    ) -> None:
        self.writes.append(len(results))
        super().put_many(results, keys)


@pytest.mark.asyncio
async def test_results_ending_apart_under_load_share_an_outbox_write(tmp_path: Path) -> None:
    """With spread start instants results end one by one, each a write of its own (a thread hop, two
    fsyncs, a file, an unlink): under load (a write began within RESULT_BUSY_S) a result waits up to
    STORE_LINGER_S for others; the first, lone, one is written at once. All stay durable before they
    are acknowledged as stored."""
    box = CountingOutbox(tmp_path)
    results = Results(box, resend_s=60.0, log=None)
    stored = [results.store(result(0))]
    await stored[0]
    assert box.writes == [1]  # alone: at once
    gap = 0.002
    assert 8 * gap < STORE_LINGER_S
    for i in range(1, 9):  # eight results ending 2 ms apart, within one linger
        stored.append(results.store(result(i)))
        await asyncio.sleep(gap)
    await asyncio.gather(*stored)
    assert sum(box.writes) == 9 and len(box.writes) <= 3, box.writes
    assert len(Outbox(tmp_path)) == 9  # on disk, not only in memory


@pytest.mark.asyncio
async def test_under_load_the_segment_outlives_its_acknowledgements_until_writes_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An acknowledgement that empties the open segment while results are being written keeps it for the
    next writes (a new file costs a directory fsync); SEGMENT_IDLE_S after the last write it goes."""
    monkeypatch.setattr(results_module, "SEGMENT_IDLE_S", 0.2)
    box = Outbox(tmp_path)
    results = Results(box, resend_s=60.0, log=None)
    session = Session(FakeCall(), worker_pb2.Welcome(), "fake")  # type: ignore[arg-type]
    await asyncio.gather(results.store(result(0)), results.store(result(1)))  # one write: a segment
    assert box.segment_open
    for i in (0, 1):
        session.mark_sent(result_key(result(i)), 0.0)
    await results.on_acks(session, ["E000", "E001"])
    assert len(box) == 0 and len(files(tmp_path)) == 1 and box.segment_open
    await asyncio.gather(results.store(result(2)), results.store(result(3)))
    assert len(files(tmp_path)) == 1  # appended
    for i in (2, 3):
        session.mark_sent(result_key(result(i)), 0.0)
    await results.on_acks(session, ["E002", "E003"])
    await asyncio.sleep(0.3)
    assert files(tmp_path) == [] and not box.segment_open
