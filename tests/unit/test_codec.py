"""The log codec and key encodings."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft.codec import (
    CODEC_VERSION,
    MAPLESS,
    CodecError,
    decode_batch,
    encode_batch,
    from_u64,
    id_bytes,
    id_text,
    make_id,
    u64,
)


def test_batch_round_trip_keeps_order_and_version() -> None:
    cmds = [
        commands_pb2.Command(request_id=f"r{i}", stamped_at_ms=i, epoch=commands_pb2.Epoch(term=i))
        for i in range(3)
    ]
    batch = decode_batch(encode_batch(cmds))
    assert batch.version == CODEC_VERSION
    assert list(batch.commands) == cmds


def test_a_newer_codec_version_is_refused_not_guessed() -> None:
    with pytest.raises(CodecError, match="version 2"):
        decode_batch(commands_pb2.CommandBatch(version=2).SerializeToString())
    with pytest.raises(CodecError):
        decode_batch(b"\xff\xff\xff")


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_u64_byte_order_is_numeric_order(a: int, b: int) -> None:
    assert (u64(a) < u64(b)) == (a < b)
    assert from_u64(u64(a)) == a


@given(st.integers(0, 2**48 - 1), st.binary(min_size=10, max_size=10))
def test_ids_round_trip_and_sort_by_time(ms: int, rand: bytes) -> None:
    text = make_id(ms, rand)
    assert len(text) == 26
    assert id_text(id_bytes(text)) == text
    assert make_id(ms, b"\0" * 10) <= text < make_id(ms + 1, b"\0" * 10) or ms == 2**48 - 1


@pytest.mark.parametrize("bad", ["", "short", "U" * 26 + "x", "!" * 26, "8" + "Z" * 25])
def test_bad_ids_name_the_field(bad: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        id_bytes(bad, field="task_id")
    assert e.value.field == "task_id"


def _holds_map(descriptor: Any, seen: set[str]) -> bool:
    if descriptor.full_name in seen:
        return False
    seen.add(descriptor.full_name)
    if descriptor.extension_ranges:
        return True  # extensions are ordered by `deterministic` too
    for f in descriptor.fields:
        if f.message_type is not None and (
            f.message_type.GetOptions().map_entry or _holds_map(f.message_type, seen)
        ):
            return True
    return False


@pytest.mark.parametrize("message", MAPLESS, ids=lambda m: m.DESCRIPTOR.name)
def test_mapless_messages_hold_no_map_so_deterministic_serialization_changes_nothing(message: Any) -> None:
    # The hot paths serialize these without `deterministic=True` (codec.MAPLESS): a map added to one of
    # them (at any depth) must move it out of MAPLESS and back to deterministic serialization.
    assert not _holds_map(message.DESCRIPTOR, set())


def test_a_task_holds_maps_so_it_is_not_mapless() -> None:
    assert _holds_map(common_pb2.Task.DESCRIPTOR, set())
    assert _holds_map(commands_pb2.CommandResult.DESCRIPTOR, set())
