"""Result files: how a command or shell payload hands a result back (docs/payloads.md, issue 15).

Each process attempt gets a fresh, empty file, named in its environment as `CRONRAFT_RESULT_FILE`, in
the worker's private directory (made once, mode 0700, or 0711 when payloads run as another user: they may
reach their own file by its unguessable name, never list the others). The file is created mode 0600 and
owned by the user the payload runs as. Once the payload has exited by itself, the worker reads what it
wrote, at most `bound` bytes, and removes the file; the attempt's `AttemptResult.result` carries it.

A result larger than the bound is refused, never cut: the attempt fails with a message naming the size
and the bound (`[limits] max_result_bytes`, which the leader's Welcome tells; the worker's own
`max_result_bytes` when smaller). Larger artifacts belong in object storage, keyed by the execution id.

The payload may replace its file by anything: the worker opens what is there without following a
symbolic link, and reads it only if it is a regular file owned by the payload's user, so that a payload
cannot make the worker read (and report) a file the payload itself could not read.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cronraft.client._process_runner import RESULT_FILE_ENV as ENV_NAME
from cronraft.client._process_runner import ProcessIdentity


@dataclass(frozen=True)
class ResultFile:
    """One attempt's result file: where the payload writes, and the most the worker keeps of it."""

    path: Path
    uid: int  # the owner the payload leaves it with (the user it runs as)
    bound: int

    def take(self) -> tuple[bytes, str]:
        """(what the payload wrote, "") or (b"", why it is refused); the file is removed either way."""
        try:
            return self._read()
        finally:
            self.discard()

    def _read(self) -> tuple[bytes, str]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return b"", ""  # removed by the payload: no result
        except OSError as exc:
            return b"", f"{ENV_NAME} could not be read: {exc.strerror or exc} (not a regular file?)"
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_uid != self.uid:
                return b"", f"{ENV_NAME} was replaced by something other than a regular file of the payload"
            if st.st_size > self.bound:
                return b"", _too_large(st.st_size, self.bound)
            data = f.read(self.bound + 1)  # it may have grown since fstat
        if len(data) > self.bound:
            return b"", _too_large(len(data), self.bound)
        return data, ""

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


def _too_large(size: int, bound: int) -> str:
    return (
        f"result too large: {size} bytes written to {ENV_NAME}, more than max_result_bytes ({bound}); "
        "not kept (put larger artifacts in object storage, keyed by the execution id)"
    )


class ResultFiles:
    """The worker's private directory of result files; `new` makes one attempt's file."""

    def __init__(self, identity: ProcessIdentity | None, *, base: Path | None = None) -> None:
        self._identity = identity
        self._base = base
        self._dir: Path | None = None

    def _directory(self) -> Path:
        if self._dir is None or not self._dir.is_dir():
            made = Path(tempfile.mkdtemp(prefix="cronraft-results-", dir=self._base))
            # Another user (run_as) must reach its own file by name, but not list the directory.
            made.chmod(0o711 if self._identity is not None else 0o700)
            self._dir = made
        return self._dir

    def new(self, execution_id: str, bound: int) -> ResultFile:
        """A fresh, empty result file (0600, owned by the payload's user) for one attempt."""
        path = self._directory() / f"{execution_id}-{secrets.token_hex(8)}.result"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            uid = os.geteuid()
            if self._identity is not None:
                os.fchown(fd, self._identity.uid, self._identity.gid)
                uid = self._identity.uid
        finally:
            os.close(fd)
        return ResultFile(path, uid, bound)

    def close(self) -> None:
        """Remove the directory and what is left in it (attempts stopped before they read theirs)."""
        if self._dir is None:
            return
        for entry in self._dir.iterdir():
            with contextlib.suppress(OSError):
                entry.unlink()
        with contextlib.suppress(OSError):
            self._dir.rmdir()
        self._dir = None


__all__ = ["ENV_NAME", "ResultFile", "ResultFiles"]
