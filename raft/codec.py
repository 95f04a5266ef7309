"""Encoding of what goes on the Raft log and into LMDB keys.

- Commands travel as a versioned `CommandBatch` protobuf (never pickled objects): `encode_batch` /
  `decode_batch`. A node that meets a newer version refuses it loudly instead of guessing.
- Ids are 128-bit, time-ordered (48-bit milliseconds + 80 random bits, stamped by the leader) and shown
  as 26 Crockford base32 characters; keys hold the 16 raw bytes.
- Times in keys are 8-byte big-endian unsigned integers so that byte order is time order.
"""

from __future__ import annotations

from collections.abc import Sequence

from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import commands_pb2, common_pb2, stats_pb2

CODEC_VERSION = 1

# Stored messages that hold no map field at any depth (tests/unit/test_codec.py checks it). Protobuf's
# deterministic serialization only orders map entries (and extensions, which proto3 has none of), so
# these serialize to the same bytes without `deterministic=True`, which costs the parsing of a keyword
# argument on every call: the hot paths of apply (an execution, a fire-ledger record, the statistics'
# hour records) call `SerializeToString()` on them. A message with a map (a Task: its tags; a
# CommandResult, which holds a Task) keeps `deterministic=True`.
MAPLESS = (common_pb2.Execution, common_pb2.FireRecord, stats_pb2.StatsHour, stats_pb2.ClusterHour)

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DECODE = {c: i for i, c in enumerate(_ALPHABET)}
# Crockford's base32 accepts these look-alikes on input.
_DECODE.update({c.lower(): i for c, i in list(_DECODE.items())})
_DECODE.update({"O": 0, "o": 0, "I": 1, "i": 1, "L": 1, "l": 1})
ID_LEN = 26


class CodecError(ValueError):
    """A log entry this node cannot decode (corrupt, or written by a newer version)."""


def encode_batch(commands: Sequence[commands_pb2.Command]) -> bytes:
    batch = commands_pb2.CommandBatch(version=CODEC_VERSION)
    batch.commands.extend(commands)
    return batch.SerializeToString()


def decode_batch(payload: bytes) -> commands_pb2.CommandBatch:
    batch = commands_pb2.CommandBatch()
    try:
        batch.ParseFromString(payload)
    except Exception as e:  # protobuf raises DecodeError, a bare Exception subclass
        raise CodecError(f"undecodable log entry: {e}") from e
    if batch.version != CODEC_VERSION:
        raise CodecError(f"log entry has codec version {batch.version}; this node reads {CODEC_VERSION}")
    return batch


def message_field(number: int, encoded: bytes) -> bytes:
    """`encoded` (a serialized message) as one occurrence of the message field `number`: tag, length,
    bytes. A repeated field is its elements encoded this way one after the other, so a serialized
    batch or result can be assembled by concatenation instead of copying every message into a
    container first."""
    tag = _TAGS.get(number)
    if tag is None:
        tag = _TAGS[number] = varint((number << 3) | 2)
    return tag + varint(len(encoded)) + encoded


_TAGS: dict[int, bytes] = {}


def varint(n: int) -> bytes:
    """The protobuf varint encoding of `n` (n >= 0)."""
    # Unrolled for the sizes of serialized commands and results (under 2 MiB): one bytes() call.
    if n < 0x80:
        return bytes((n,))
    if n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    if n < 0x200000:
        return bytes(((n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80, n >> 14))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big", signed=False)


def from_u64(b: bytes) -> int:
    return int.from_bytes(b[:8], "big", signed=False)


def make_id(ms: int, random80: bytes) -> str:
    """The text id for a millisecond timestamp and 10 random bytes (both supplied by the caller)."""
    if len(random80) != 10:
        raise ValueError("random80 must be 10 bytes")
    return id_text((ms & ((1 << 48) - 1)).to_bytes(6, "big") + random80)


def id_text(raw: bytes) -> str:
    text = _TEXT_CACHE.get(raw)
    if text is not None:
        return text
    n = int.from_bytes(raw, "big")
    # 26 digits = 13 groups of 10 bits, two characters each from a table.
    text = "".join([_PAIRS[(n >> shift) & 1023] for shift in _PAIR_SHIFTS])
    _remember(text, raw)
    return text


# Decoding is on the hot path of apply (several ids per command): Crockford digits are mapped to the
# digits of Python's int(..., 32) with one bytes.translate; anything else maps to "!", which int()
# refuses, and the slow loop below then names the bad character.
_PY_DIGITS = b"0123456789abcdefghijklmnopqrstuv"
_TO_PY32 = bytes(_PY_DIGITS[_DECODE[chr(b)]] if chr(b) in _DECODE else ord("!") for b in range(256))
# The same for the canonical digits only (what id_text writes): an id written so is its own id_text.
_CANON_TO_PY32 = bytes(
    _PY_DIGITS[_ALPHABET.index(chr(b))] if chr(b) in _ALPHABET else ord("!") for b in range(256)
)
_PAIRS = [_ALPHABET[i >> 5] + _ALPHABET[i & 31] for i in range(1024)]
_PAIR_SHIFTS = tuple(range(120, -1, -10))


# The ids decoded and encoded lately, both ways: one execution's id is decoded by its Fire, Grant and
# Complete (each several times), its task's by every command about it, a fire's ledger record holds its
# task's id as text, and a dict look-up costs a tenth of decoding (a thirtieth of encoding). Bounded: both
# are emptied when full (a burst's ids are decoded again once, nothing more).
_ID_CACHE: dict[str, bytes] = {}
_TEXT_CACHE: dict[bytes, str] = {}  # only canonical texts: id_text's own
_ID_CACHE_MAX = 1 << 14


def _remember(text: str, raw: bytes) -> None:
    if len(_ID_CACHE) >= _ID_CACHE_MAX:
        _ID_CACHE.clear()
        _TEXT_CACHE.clear()
    _ID_CACHE[text] = raw
    _TEXT_CACHE[raw] = text


def id_bytes(text: str, *, field: str = "id") -> bytes:
    """The 16 key bytes of a text id; InvalidArgument naming `field` when it is not one."""
    raw = _ID_CACHE.get(text)
    if raw is not None:
        return raw
    if len(text) == ID_LEN and text.isascii():
        encoded = text.encode()
        try:
            n = int(encoded.translate(_CANON_TO_PY32), 32)
        except ValueError:  # not canonical (lower case, look-alikes) or not an id
            try:
                n = int(encoded.translate(_TO_PY32), 32)
            except ValueError:
                pass
            else:
                if not n >> 128:
                    return n.to_bytes(16, "big")
        else:
            if not n >> 128:
                raw = n.to_bytes(16, "big")
                _remember(text, raw)
                return raw
    return _id_bytes_checked(text, field)


def _id_bytes_checked(text: str, field: str) -> bytes:
    if len(text) != ID_LEN:
        raise InvalidArgument(field, f"not a valid id (expected {ID_LEN} characters, got {len(text)})")
    n = 0
    for c in text:
        v = _DECODE.get(c)
        if v is None:
            raise InvalidArgument(field, f"not a valid id (bad character {c!r})")
        n = (n << 5) | v
    if n >> 128:
        raise InvalidArgument(field, "not a valid id (out of range)")
    return n.to_bytes(16, "big")


def token_tuple(token: object) -> tuple[int, int]:
    """A FencingToken as a comparable (term, index) pair."""
    term = getattr(token, "term", 0)
    index = getattr(token, "index", 0)
    return int(term), int(index)


__all__ = [
    "CODEC_VERSION",
    "ID_LEN",
    "MAPLESS",
    "CodecError",
    "decode_batch",
    "encode_batch",
    "from_u64",
    "id_bytes",
    "id_text",
    "make_id",
    "message_field",
    "token_tuple",
    "u64",
    "varint",
]
