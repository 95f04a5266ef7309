"""New execution and task ids, made fast on the event loop's thread (the leader stamps one into every Fire;
the Scheduler servicer and bulk import into new tasks)."""

from __future__ import annotations

import os

from cronraft.raft.codec import make_id


class _IdSource:
    """Ids as raft.codec.make_id makes them (26 Crockford digits: 2 zero bits and the 48-bit millisecond
    time in the first 10, 80 random bits in the last 16), made faster: the time's digits once per
    millisecond, the random digits straight from random bytes (each byte's low 5 bits: uniform, as 256 is
    a multiple of 32) read from the OS 256 ids at a time. Used on the event loop's thread only."""

    _CHUNK = 16 * 256
    _DIGIT = bytes(b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"[b & 31] for b in range(256))

    def __init__(self) -> None:
        self._ms = -1
        self._prefix = ""
        self._digits = ""
        self._pos = self._CHUNK

    def __call__(self, ms: int) -> str:
        if ms != self._ms:
            self._prefix = make_id(ms, bytes(10))[:10]
            self._ms = ms
        pos = self._pos
        if pos >= self._CHUNK:
            self._digits = os.urandom(self._CHUNK).translate(self._DIGIT).decode()
            pos = 0
        self._pos = pos + 16
        return self._prefix + self._digits[pos : pos + 16]


new_id = _IdSource()  # new_id(ms): a new execution or task id for the millisecond `ms`


__all__ = ["new_id"]
