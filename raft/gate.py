"""The store's gate: a shared / exclusive lock that lets an environment swap wait for open transactions.

Every LMDB transaction of `cronraft.raft.store` holds it shared; `replace_from`, `close` and `grow` hold it
exclusive (LMDB's rule: no transaction open while the environment is closed or its map resized).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Gate:
    """Shared / exclusive lock with writer preference: transactions share, an environment swap excludes."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._users = 0
        self._exclusive = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._users += 1
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                if self._users == 0:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self, wait_s: float | None = None) -> Iterator[bool]:
        """Yields True once no transaction is open; with `wait_s`, yields False (and excludes nothing)
        if open transactions have not ended within that time: new ones only waited that long."""
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._exclusive = True  # new transactions wait from here on
            deadline = None if wait_s is None else time.monotonic() + wait_s
            while self._users:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    self._exclusive = False
                    self._cond.notify_all()
                    break
                self._cond.wait(left)
            acquired = self._exclusive
        try:
            yield acquired
        finally:
            if acquired:
                with self._cond:
                    self._exclusive = False
                    self._cond.notify_all()


__all__ = ["Gate"]
