"""The netns subnet claim (tests/fault/netclaim.py): exclusive across threads and processes, released by
`release()` and by the holder's death, and asked about the root namespace only while holding the lock.
No root needed: the lock files go to a temporary folder and the root namespace is a stand-in."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.fault.netclaim import FIRST, LAST, NoFreeSubnet, SubnetClaim, claim_subnet

ROOT = Path(__file__).resolve().parents[2]
EVERY = frozenset(range(FIRST, LAST + 1))


def _free(x: int) -> bool:
    return False


def _only(*thirds: int) -> frozenset[int]:
    """The `skip` set that leaves only `thirds` as candidates."""
    return EVERY - set(thirds)


def _holder(claim_dir: Path, seed: int) -> subprocess.Popen[str]:
    """Another process that claims (with `seed`'s order), prints its X and holds the claim until its stdin
    closes or it is killed."""
    code = (
        "import random, sys; from pathlib import Path; "
        "from tests.fault.netclaim import claim_subnet; "
        f"c = claim_subnet(random.Random({seed}), lambda x: False, claim_dir=Path({str(claim_dir)!r})); "
        "print(c.third, flush=True); sys.stdin.read()"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def _third(proc: subprocess.Popen[str]) -> int:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip(), "the holder claimed nothing"
    return int(line)


def test_claims_in_one_process_never_share_a_subnet_and_name_their_prefix_after_it(tmp_path: Path) -> None:
    claims = [claim_subnet(random.Random(7), _free, claim_dir=tmp_path) for _ in range(5)]
    try:
        thirds = [c.third for c in claims]
        assert len(set(thirds)) == 5  # the same order every time: each skips the ones held
        for c in claims:
            assert c.subnet == f"10.213.{c.third}"
            assert len(c.prefix) == 6 and c.prefix.startswith(f"cr{c.third:02x}")
        assert len({c.prefix[:4] for c in claims}) == 5
    finally:
        for c in claims:
            c.release()


def test_a_released_subnet_can_be_claimed_again(tmp_path: Path) -> None:
    first = claim_subnet(random.Random(), _free, claim_dir=tmp_path, skip=_only(9))
    with pytest.raises(NoFreeSubnet):
        claim_subnet(random.Random(), _free, claim_dir=tmp_path, skip=_only(9))
    first.release()
    first.release()  # idempotent
    assert not first.held
    again = claim_subnet(random.Random(), _free, claim_dir=tmp_path, skip=_only(9))
    assert again.third == 9 and again.held
    again.release()


def test_the_root_namespace_is_asked_only_under_the_lock_and_a_used_subnet_is_passed_over(
    tmp_path: Path,
) -> None:
    asked: list[int] = []

    def in_use(x: int) -> bool:
        # While we are asked, nobody else can claim x.
        with pytest.raises(NoFreeSubnet):
            claim_subnet(random.Random(), _free, claim_dir=tmp_path, skip=_only(x))
        asked.append(x)
        return x == 3

    claim = claim_subnet(random.Random(), in_use, claim_dir=tmp_path, skip=_only(3, 4))
    assert claim.third == 4 and sorted(asked) in ([3, 4], [4])
    used = claim_subnet(random.Random(), _free, claim_dir=tmp_path, skip=_only(3))
    assert used.third == 3  # passing over a used subnet does not keep its lock
    claim.release()
    used.release()


def test_another_process_holding_a_subnet_keeps_it_until_it_dies(tmp_path: Path) -> None:
    holder = _holder(tmp_path, seed=11)
    try:
        held = _third(holder)
        mine = claim_subnet(random.Random(11), _free, claim_dir=tmp_path)  # the same order: held comes first
        assert mine.third != held
        mine.release()
        with pytest.raises(NoFreeSubnet):
            claim_subnet(random.Random(), _free, claim_dir=tmp_path, skip=_only(held))
    finally:
        holder.kill()  # SIGKILL: no release, the kernel drops the lock with the process
        holder.wait()
    after = claim_subnet(random.Random(), _free, claim_dir=tmp_path, skip=_only(held))
    assert after.third == held
    after.release()


def test_processes_started_at_once_get_different_subnets(tmp_path: Path) -> None:
    holders = [_holder(tmp_path, seed=5) for _ in range(6)]  # all try the same subnets in the same order
    try:
        thirds = [_third(p) for p in holders]
    finally:
        for p in holders:
            p.kill()
            p.wait()
    assert len(set(thirds)) == len(holders), thirds


def test_threads_started_at_once_get_different_subnets(tmp_path: Path) -> None:
    got: list[SubnetClaim] = []
    start = threading.Barrier(8)

    def claim() -> None:
        start.wait()
        got.append(claim_subnet(random.Random(3), _free, claim_dir=tmp_path))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    try:
        assert len(got) == 8 and len({c.third for c in got}) == 8
    finally:
        for c in got:
            c.release()
