"""Backup and restore of a large store, in process (issue 18): how big a backup is and how long taking,
checking and restoring it takes, for a store of `--tasks` tasks and `--executions` executions.

The store is filled through apply as a cluster fills it (bench/search.py `fill`: ImportTasks of 1,000
tasks, then fires, grants and completions). Then, each measured on its own:
- `copy_s`, `stream_s`: the node's side of `Cluster.Backup` (daemon.backup `BackupSource`): the store
  copied into the spool (one read transaction), then streamed, here into a file, at `--rate` bytes a
  second (default: unpaced, to measure the work itself; a node streams at most 64 MiB/s);
- `verify_s`: `schedd restore`'s check of the file (sha256 of the whole file, header);
- `restore_s`: seeding a new node's store and Raft files from it (raft.backup_image `seed`), with the
  digest of the restored store compared with the source's (`digest_equal`).
Sizes: `store_bytes` (the source's used extent), `backup_bytes` (the file).

    .venv/bin/python bench/backup.py --tasks 100000 --executions 100000
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS_DIR, Recorder
from bench.search import fill
from cronraft.daemon.backup import BackupSource, Origin
from cronraft.raft.backup_file import verify
from cronraft.raft.backup_image import seed
from cronraft.raft.digest import digest
from cronraft.raft.store import LmdbKV
from cronraft.raft.versions import schedule_versions


async def _take(kv: LmdbKV, data: Path, out: Path, rate: int) -> tuple[float, float]:
    source = BackupSource(
        kv,
        data,
        origin=lambda: Origin("c-bench", "bench", 1, schedule_versions()),
        reserve_bytes=1 << 20,
        wall_ms=lambda: int(time.time() * 1000),
        max_bytes_per_s=rate,
    )
    t0 = time.monotonic()
    copied = 0.0
    with open(out, "wb") as f:
        async for chunk in source.stream():
            part = chunk.WhichOneof("part")
            if part == "start":
                copied = time.monotonic() - t0
                f.write(chunk.start.header)
            elif part == "data":
                f.write(chunk.data)
            else:
                f.write(chunk.end.trailer)
    return copied, time.monotonic() - t0 - copied


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=100_000)
    p.add_argument("--executions", type=int, default=100_000)
    p.add_argument("--rate", type=int, default=1 << 40, help="bytes a second streamed (default: unpaced)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: proves the script works")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = p.parse_args()
    if args.smoke:
        args.tasks, args.executions = 2_000, 1_000
    work = Path(tempfile.mkdtemp(prefix="cronraft-backup-bench-"))
    try:
        data = work / "node"
        t = time.monotonic()
        fill(LmdbKV(data / "state", map_size=64 << 30), args.tasks, args.executions)  # closes it
        fill_s = time.monotonic() - t
        kv = LmdbKV(data / "state", map_size=64 << 30)
        store_bytes = kv.high_water()
        out = work / "store.crbackup"
        copy_s, stream_s = asyncio.run(_take(kv, data, out, args.rate))
        kv.close()
        t = time.monotonic()
        backup = verify(out)
        verify_s = time.monotonic() - t
        t = time.monotonic()
        seed(backup, work / "new" / "state", work / "new" / "raft", ["127.0.0.1:7001"])
        restore_s = time.monotonic() - t
        rec = Recorder(
            "backup",
            {"tasks": args.tasks, "executions": args.executions, "rate": args.rate},
            out_dir=args.out_dir,
        )
        rec.add(
            {
                "fill_s": fill_s,
                "store_bytes": store_bytes,
                "backup_bytes": out.stat().st_size,
                "copy_s": copy_s,
                "stream_s": stream_s,
                "verify_s": verify_s,
                "restore_s": restore_s,
                "digest_equal": digest(data) == digest(work / "new"),
            }
        )
        rec.write()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
