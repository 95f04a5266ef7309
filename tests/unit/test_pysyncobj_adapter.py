"""raft.pysyncobj_adapter: the version it was checked against is the one pyproject.toml pins; its journal.

The adapter reaches into pysyncobj's private attributes (docs/architecture.md, "Replication"), which any
release may rename: bumping the pin without re-checking them must fail here first.
"""

from __future__ import annotations

import random
import re
import struct
import tomllib
from pathlib import Path

from pysyncobj.journal import FileJournal

from cronraft.raft import pysyncobj_adapter
from cronraft.raft.durability import JournalSpace

ROOT = Path(__file__).resolve().parents[2]


def test_the_adapter_is_checked_against_the_pinned_pysyncobj() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [m.group(1) for d in deps if (m := re.fullmatch(r"\s*pysyncobj\s*==\s*(\S+)\s*", d))]
    assert pins == [pysyncobj_adapter.PINNED_VERSION]


def test_the_installed_pysyncobj_is_the_pinned_one() -> None:
    assert pysyncobj_adapter.version_problem() is None


def test_a_guarded_journal_writes_the_same_file_as_pysyncobjs(tmp_path: Path) -> None:
    """The guarded journal keeps the map's size and reads its end from memory (fewer system calls on the
    Raft thread): the file must stay byte for byte what pysyncobj's own FileJournal writes, through
    growth, truncation, compaction and clearing, and the end it reports must be the header's."""
    plain = FileJournal(str(tmp_path / "plain.journal"))
    guarded = FileJournal(str(tmp_path / "guarded.journal"))
    space = JournalSpace(tmp_path / "guarded.journal", 1 << 16, pysyncobj_adapter.FILE_JOURNAL_LAYOUT)
    pysyncobj_adapter.guard_journal(guarded, space, None)
    rng = random.Random(7)

    def same() -> None:
        for journal in (plain, guarded):
            journal.flush()
        a = (tmp_path / "plain.journal").read_bytes()
        b = (tmp_path / "guarded.journal").read_bytes()
        assert a == b
        end = struct.unpack_from("<I", b, pysyncobj_adapter.FILE_JOURNAL_LAYOUT.end_offset_at)[0]
        assert guarded.end_offset() == end == space.offset()
        assert list(guarded) == list(plain)

    def add(count: int, start: int) -> int:
        for index in range(start, start + count):
            command = rng.randbytes(rng.choice((1, 40, 700, 5000)))
            plain.add(command, index, 1 + index // 50)
            guarded.add(command, index, 1 + index // 50)
        return start + count

    try:
        following = add(300, 1)  # grows the map several times
        same()
        for journal in (plain, guarded):
            journal.deleteEntriesFrom(250)  # positions: a conflict's truncation
        same()
        for journal in (plain, guarded):
            journal.deleteEntriesTo(100)  # a compaction rewrites the file
        same()
        following = add(120, following - 50)
        same()
        for journal in (plain, guarded):
            journal.clear()
        add(5, 1000)
        same()
    finally:
        plain._destroy()
        guarded._destroy()
        space.close()
