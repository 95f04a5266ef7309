"""Disk space set aside ahead of writes (Linux `fallocate` with FALLOC_FL_KEEP_SIZE), and free space.

The journal and the store both write past their file's end as they grow; on a full file system that
write fails (the store: ENOSPC or EIO at commit, deletes included) or kills the process (the journal is
an mmap: SIGBUS). Allocating the blocks first turns that into an error we see before writing, and keeps
a reserve that the file can still use once the disk is full. KEEP_SIZE allocates past the end of the
file without changing its size: pysyncobj sizes its map from the file's size, so the size must stay
its own (a bigger file made it write past its map).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_fallocate = getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    _fallocate.restype = ctypes.c_int

_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV})
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def preallocate(fd: int, offset: int, length: int) -> bool:
    """Allocate `length` bytes of `fd` from `offset`, past its end if need be, without changing its
    size. False when the file system has not that much space (what it had stays allocated); True when
    done, or where the file system cannot preallocate (then nothing is reserved). Other errors raise."""
    if length <= 0:
        return True
    if _fallocate is None:
        return True
    if _fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in _FULL:
        return False
    if err in _UNSUPPORTED:
        return True
    raise OSError(err, os.strerror(err))


def release(fd: int, offset: int, length: int) -> bool:
    """Give back to the file system the blocks of `fd` in [offset, offset + length) (a hole; the size
    stays). False where the file system cannot."""
    if length <= 0 or _fallocate is None:
        return False
    return bool(_fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0)


def free_bytes(path: str | Path) -> int:
    """Bytes available to this process on the file system holding `path` (0 if it cannot be read)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


__all__ = ["free_bytes", "preallocate", "release"]
