"""Which 10.213.X.0/24 subnet (and so which namespace names) a netns fault cluster uses: a claim that is
exclusive across processes, held for the cluster's life (tests/fault/netns.py).

Looking at the root namespace's routes is not enough on its own: two harnesses started at once (pytest-xdist
workers, two people running fault tests) both see X free before either has added its veth, and both take
it. So each X has a lock file, `<claim_dir>/10.213.X.lock`, and a harness owns X while it holds an
exclusive `flock` on it; only then does it check that the root namespace does not use X (a leftover of a
dead harness, or someone else's network), and it keeps the lock until its teardown has removed the veth.
The kernel drops a lock with its descriptor, so a harness that dies (even SIGKILL) leaves no stale claim,
only perhaps its network, which the route check then skips and `registry.reap_stale` removes.

The namespace prefix is derived from the claim: "cr" + X in two hex digits + two random hex digits. X makes
it unique among live harnesses by construction; the random part keeps it apart from a dead harness's
leftover namespaces of the same X. Six characters, as before: `<prefix>p<name>` must fit a 15-byte
interface name.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path

__all__ = ["CLAIM_DIR", "NoFreeSubnet", "SubnetClaim", "claim_subnet", "default_claim_dir"]

CLAIM_DIR = Path("/run/cronraft-netns")  # root only, like the namespaces themselves
FIRST, LAST = 1, 254  # the third octet's candidates


class NoFreeSubnet(RuntimeError):
    pass


def default_claim_dir() -> Path:
    """/run/cronraft-netns for root (netns mode is root only); a folder under the temp dir otherwise."""
    if os.geteuid() == 0:
        return CLAIM_DIR
    return Path(tempfile.gettempdir()) / f"cronraft-netns-{os.geteuid()}"


class SubnetClaim:
    """This process's hold on 10.213.`third`: the open, flock'd lock file. `release()` (idempotent) gives
    it up; so do the process's exit and the claim's garbage collection (a cluster whose constructor
    failed after claiming)."""

    def __init__(self, third: int, fd: int, path: Path, rng: random.Random) -> None:
        self.third = third
        self.path = path
        self.prefix = f"cr{third:02x}{rng.randrange(256):02x}"
        self._close = weakref.finalize(self, os.close, fd)

    @property
    def subnet(self) -> str:
        return f"10.213.{self.third}"

    @property
    def held(self) -> bool:
        return self._close.alive

    def release(self) -> None:
        self._close()  # closing drops the flock (once); the file stays, for the next claimant to lock


def _try_lock(path: Path) -> int | None:
    """The descriptor of `path` locked exclusively, or None if another holder has it. os.open's
    descriptors are not inherited by the nodes the harness spawns, so only this process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    with contextlib.suppress(OSError):  # for a person looking at the folder; the lock is what counts
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def claim_subnet(
    rng: random.Random,
    in_use: Callable[[int], bool],
    *,
    claim_dir: Path | None = None,
    skip: frozenset[int] = frozenset(),
) -> SubnetClaim:
    """Claim a free 10.213.X: the first X, in `rng`'s order, whose lock this process gets and which
    `in_use(X)` (asked only while holding the lock) says the root namespace does not use. `skip`: X known
    to be used already (a cheap first filter; `in_use` is still asked). Raises NoFreeSubnet."""
    folder = claim_dir if claim_dir is not None else default_claim_dir()
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    candidates = [x for x in range(FIRST, LAST + 1) if x not in skip]
    rng.shuffle(candidates)
    for x in candidates:
        path = folder / f"10.213.{x}.lock"
        fd = _try_lock(path)
        if fd is None:
            continue  # another live harness holds it
        try:
            used = in_use(x)
        except BaseException:
            os.close(fd)
            raise
        if used:
            os.close(fd)
            continue
        return SubnetClaim(x, fd, path, rng)
    raise NoFreeSubnet(
        f"no free 10.213.X.0/24 subnet: every one is claimed in {folder} or used in the root namespace"
    )
