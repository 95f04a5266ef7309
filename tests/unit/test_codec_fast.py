"""The fast paths of the codec agree with the plain definitions: id decoding/encoding (translate + int,
pair table) and result assembly by concatenation (`message_field`)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft.codec import ID_LEN, id_bytes, id_text, message_field

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
DECODE = {c: i for i, c in enumerate(CROCKFORD)}
DECODE.update({c.lower(): i for c, i in list(DECODE.items())})
DECODE.update({"O": 0, "o": 0, "I": 1, "i": 1, "L": 1, "l": 1})


def reference_bytes(text: str) -> bytes | None:
    """The definition: 26 Crockford digits, most significant first, at most 128 bits."""
    if len(text) != ID_LEN or any(c not in DECODE for c in text):
        return None
    n = 0
    for c in text:
        n = n * 32 + DECODE[c]
    return None if n >> 128 else n.to_bytes(16, "big")


def reference_text(raw: bytes) -> str:
    n = int.from_bytes(raw, "big")
    return "".join(CROCKFORD[(n >> (5 * (ID_LEN - 1 - i))) & 31] for i in range(ID_LEN))


@given(st.binary(min_size=16, max_size=16))
def test_id_text_matches_the_definition(raw: bytes) -> None:
    assert id_text(raw) == reference_text(raw)
    assert id_bytes(id_text(raw)) == raw
    assert id_bytes(id_text(raw).lower()) == raw


# Characters that Python's int(..., 32) would accept or ignore but an id must not contain.
TRICKY = "_ +-\t\n0٣UuOoIiLl!é" + CROCKFORD


@given(st.text(alphabet=TRICKY, min_size=24, max_size=28))
def test_id_bytes_accepts_exactly_the_ids(text: str) -> None:
    expected = reference_bytes(text)
    if expected is None:
        with pytest.raises(InvalidArgument) as e:
            id_bytes(text, field="task_id")
        assert e.value.field == "task_id"
    else:
        assert id_bytes(text) == expected


def test_out_of_range_and_whitespace_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="out of range"):
        id_bytes("8" + "0" * 25)
    with pytest.raises(InvalidArgument, match="bad character"):
        id_bytes(" " + "0" * 25)
    with pytest.raises(InvalidArgument, match="bad character"):
        id_bytes("0" * 12 + "_" + "0" * 13)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = buf[pos]
        n |= (b & 0x7F) << shift
        pos += 1
        shift += 7
        if not b & 0x80:
            return n, pos


@given(st.binary(max_size=40_000), st.integers(1, 5000))
def test_message_field_is_tag_length_bytes(data: bytes, number: int) -> None:
    encoded = message_field(number, data)
    tag, pos = _varint(encoded, 0)
    length, pos = _varint(encoded, pos)
    assert (tag >> 3, tag & 7, length, encoded[pos:]) == (number, 2, len(data), data)


def test_a_concatenated_batch_result_parses_like_the_message() -> None:
    results = [
        commands_pb2.CommandResult(applied=True, task=common_pb2.Task(task_id="T" * 26)),
        commands_pb2.CommandResult(applied=False, error_code="not_due", error="x" * 300),
        commands_pb2.CommandResult(),
        commands_pb2.CommandResult(error="y" * 20_000),  # a three-byte length
    ]
    assembled = b"".join(message_field(1, r.SerializeToString()) for r in results)
    assert commands_pb2.BatchResult.FromString(assembled) == commands_pb2.BatchResult(results=results)
    assert assembled == commands_pb2.BatchResult(results=results).SerializeToString()


@pytest.mark.parametrize("size", [0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 3_000_000])
def test_message_field_lengths_at_the_varint_boundaries(size: int) -> None:
    encoded = message_field(1, b"z" * size)
    tag, pos = _varint(encoded, 0)
    length, pos = _varint(encoded, pos)
    assert (tag, length, len(encoded) - pos) == (0x0A, size, size)
