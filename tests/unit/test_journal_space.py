"""raft.durability `JournalSpace`: the reserve kept allocated past the journal's last entry.

A journal that grows each tick must not cost a fallocate each tick (a system call on the Raft thread):
`maintain` allocates a step beyond the reserve when it allocates at all, and exactly the reserve when the
disk has no more.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from cronraft.raft.durability import MAINTAIN_STEP, JournalLayout, JournalSpace

LAYOUT = JournalLayout(header=40, end_offset_at=36, record_overhead=24, command_overhead=64)
MIB = 1 << 20


def _journal(path: Path, end: int) -> None:
    """A journal file whose header says its entries end at `end`."""
    with path.open("r+b" if path.exists() else "w+b") as f:
        f.seek(0)
        f.write(b"\0" * LAYOUT.end_offset_at + struct.pack("<I", end))


def test_the_reserve_is_allocated_a_step_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    _journal(path, 40)
    space = JournalSpace(path, 4 * MIB, LAYOUT)
    space.open()
    try:
        space.maintain()
        assert space.allocated == 40 + 4 * MIB + MAINTAIN_STEP and space.low is None
        first = space.allocated
        for end in range(1_000, MAINTAIN_STEP, 50_000):  # growth within the step: nothing to allocate
            _journal(path, end)
            space.maintain()
            assert space.allocated == first
        _journal(path, MAINTAIN_STEP + 1_000)
        space.maintain()
        assert space.allocated == MAINTAIN_STEP + 1_000 + 4 * MIB + MAINTAIN_STEP
        assert os.stat(path).st_size == 40  # allocated past the end, the size unchanged
    finally:
        space.close()


def test_a_small_reserve_takes_a_step_no_larger_than_itself(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    _journal(path, 40)
    for reserve in (0, 4096):
        space = JournalSpace(path, reserve, LAYOUT)
        space.open()
        try:
            space.maintain()
            assert space.allocated == 40 + 2 * reserve
        finally:
            space.close()


def test_the_end_is_read_from_the_writer_once_tracked(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    _journal(path, 500)
    space = JournalSpace(path, MIB, LAYOUT)
    space.open()
    try:
        assert space.offset() == 500 and space.entry_bytes() == 460
        space.track(lambda: 9_000)
        assert space.offset() == 9_000 and space.entry_bytes() == 8_960
    finally:
        space.close()
    assert space.offset() == 0
