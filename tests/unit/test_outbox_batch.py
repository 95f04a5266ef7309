"""The worker outbox's batch files (`Outbox.put_many`): one file and one fsync pair for many results,
loaded back like single results, deleted only once every result in them was acknowledged."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from cronraft.client.worker.outbox import AttemptKey, Outbox, result_key
from cronraft.client.worker.results import STORE_LINGER_S, Results
from cronraft.proto.v1 import common_pb2


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


def test_a_torn_batch_file_is_moved_aside(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    box.put_many([result(1), result(2)])
    (name,) = files(tmp_path)
    path = tmp_path / name
    path.write_bytes(path.read_bytes()[:-3])
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
