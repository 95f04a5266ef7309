"""How an appended payload is stored in pysyncobj's journal (raft.pysyncobj_adapter.node
`JOURNAL_PICKLE_PROTOCOL`), and the wire's compression (`transport.deflate`): this release and the previous
one read each other's journals, and pysyncobj's own receiving end reads our messages.

The previous release stored a payload as pysyncobj's `@replicated` call pickles it (protocol 2); this one
pickles the same call with protocol 4. Both are read by pysyncobj's own code only (its `FileJournal` and its
apply's `pickle.loads`), which a previous release runs unchanged (the same pinned pysyncobj): so the journal
is written here, read back with pysyncobj's reader, and replayed by a node over a journal mixing both."""

from __future__ import annotations

import asyncio
import os
import shutil
import zlib
from pathlib import Path

import pytest
from pysyncobj import pickle as pysyncobj_pickle
from pysyncobj.journal import FileJournal

from cronraft.raft.pysyncobj_adapter.node import JOURNAL_PICKLE_PROTOCOL
from cronraft.raft.pysyncobj_adapter.transport import deflate
from cronraft.raft.replicator import RaftMember, ReplicatorConfig
from cronraft.raft.store import LmdbKV
from cronraft.raft.syncobj_replicator import JOURNAL_FILE, SyncObjReplicator
from tests.support.ports import free_ports
from tests.support.wait import wait_until_async

REGULAR = 0  # pysyncobj's _COMMAND_TYPE.REGULAR: the first byte of a replicated call's entry
# Binary payloads: every byte value, as a serialized CommandBatch may hold (ids, tokens, digests).
PAYLOADS = [bytes(range(256)) * 8 + bytes([i]) for i in range(3)]


class OneNode:
    """A single-node replicator recording what it applies (a fresh record, hence a full replay, per start)."""

    def __init__(self, data_dir: Path) -> None:
        (port,) = free_ports(1)
        self.config = ReplicatorConfig(
            self_member=RaftMember("n1", f"127.0.0.1:{port}"),
            peers=(),
            data_dir=data_dir,
            secret=None,
            election_timeout_ms=300,
            heartbeat_ms=50,
        )
        self.applied: list[tuple[int, bytes]] = []
        self.store: LmdbKV | None = None
        self.rep: SyncObjReplicator | None = None

    def apply(self, index: int, payload: bytes) -> bytes:
        self.applied.append((index, payload))
        return b"ok"

    async def start(self) -> SyncObjReplicator:
        self.applied = []
        shutil.rmtree(self.config.data_dir / "state", ignore_errors=True)
        self.store = LmdbKV(self.config.data_dir / "state", map_size=16 << 20)
        self.rep = SyncObjReplicator(self.config, self.apply, self.store, applied_index=lambda: 0)
        self.rep.start()
        rep = self.rep
        await wait_until_async(lambda: rep.status().is_leader and rep.status().ready, 15.0, "a leader")
        return rep

    def stop(self) -> None:
        if self.rep is not None:
            self.rep.stop()
            self.rep = None
        if self.store is not None:
            self.store.close()
            self.store = None

    def journal(self) -> list[tuple[bytes, int, int]]:
        """The journal's entries as pysyncobj's own reader reads them (the node stopped)."""
        journal = FileJournal(str(self.config.data_dir / JOURNAL_FILE))
        try:
            return [tuple(journal[i]) for i in range(len(journal))]
        finally:
            journal._destroy()


@pytest.fixture
def node(tmp_path: Path):  # type: ignore[no-untyped-def]
    one = OneNode(tmp_path / "n1")
    yield one
    one.stop()


def regular(entries: list[tuple[bytes, int, int]]) -> list[tuple[bytes, int, int]]:
    return [e for e in entries if e[0][0] == REGULAR]


@pytest.mark.asyncio
async def test_a_payload_is_journalled_as_is_and_read_back_by_pysyncobj_as_its_own_call(
    node: OneNode,
) -> None:
    rep = await node.start()
    for payload in PAYLOADS:
        assert await rep.propose(payload, timeout_s=10) == b"ok"
    node.stop()
    stored = regular(node.journal())
    assert len(stored) == len(PAYLOADS)
    for (command, _index, _term), payload in zip(stored, PAYLOADS, strict=True):
        # pysyncobj's apply decodes an entry with its own pickle.loads: the call (method id, (payload,))
        func_id, args = pysyncobj_pickle.loads(command[1:])
        assert args == (payload,)
        # ... the same object as pysyncobj's own encoding of the call (the previous release's entries)
        own = bytes([REGULAR]) + pysyncobj_pickle.dumps((func_id, (payload,)))
        assert pysyncobj_pickle.loads(own[1:]) == pysyncobj_pickle.loads(command[1:])
        # the payload's bytes are stored as they are (protocol 2 spent two bytes on each byte above 127)
        assert command[1] == 0x80 and command[2] == JOURNAL_PICKLE_PROTOCOL
        assert len(command) < len(payload) + 32 < len(own)


@pytest.mark.asyncio
async def test_a_journal_mixing_the_previous_release_entries_and_this_one_replays_in_order(
    node: OneNode,
) -> None:
    rep = await node.start()
    assert await rep.propose(PAYLOADS[0], timeout_s=10) == b"ok"
    node.stop()
    # The previous release's entries after it: pysyncobj's own encoding of the call, appended by its
    # FileJournal at the next indexes in the same term (as that release's leader would have written them).
    entries = node.journal()
    func_id = pysyncobj_pickle.loads(regular(entries)[0][0][1:])[0]
    _, last_index, term = entries[-1]
    journal = FileJournal(str(node.config.data_dir / JOURNAL_FILE))
    try:
        for offset, payload in enumerate(PAYLOADS[1:], start=1):
            old = bytes([REGULAR]) + pysyncobj_pickle.dumps((func_id, (payload,)))
            journal.add(old, last_index + offset, term)
        journal.flush()
    finally:
        journal._destroy()
    # Replayed from the start (a fresh store), then one more entry of this release on top.
    rep = await node.start()
    await wait_until_async(lambda: len(node.applied) == len(PAYLOADS), 15.0, "the journal replayed")
    assert [p for _, p in node.applied] == PAYLOADS
    extra = os.urandom(3000)
    assert await rep.propose(extra, timeout_s=10) == b"ok"
    node.stop()
    indexes = [i for i, _ in node.applied]
    assert indexes == sorted(indexes)
    # And read once more from the start: every entry, both encodings, in log order.
    await node.start()
    await wait_until_async(lambda: len(node.applied) == len(PAYLOADS) + 1, 15.0, "the journal replayed")
    assert [p for _, p in node.applied] == [*PAYLOADS, extra]
    await asyncio.sleep(0)


@pytest.mark.parametrize("size", [1, 100, 511, 512, 513, 5_000, 40_000, 70_000])
def test_deflate_is_read_by_zlib_decompress_as_pysyncobj_receives_and_shrinks_as_zlib_compress(
    size: int,
) -> None:
    data = (b"append_entries next_node_idx %d " % size) * (size // 30 + 1)
    data = (os.urandom(size // 3) + data)[:size]
    for level in (0, 3):
        packed = deflate(data, level)
        assert zlib.decompress(packed) == data  # pysyncobj's receiving end: zlib.decompress, default window
        assert len(packed) <= len(zlib.compress(data, level)) * 1.01 + 8
