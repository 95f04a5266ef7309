"""Offline digest of a stopped node's replicated state, for convergence checks (fault checker rule R9).

    python -m cronraft.raft.digest DATA_DIR

prints one JSON object: {"applied_index": N, "digest": "<sha256 hex>"}. DATA_DIR is a node's
`node.data_dir` (the store is its `state/` folder) or the LMDB environment folder itself. The store is
opened read-only and without LMDB's lock file, so the node must be stopped: it must not write meanwhile.

The digest covers every sub-database of `raft.kv.DATABASES`, in that order, each key and value in key
order, all length-prefixed (so that no two different stores hash alike by shifting bytes between a key
and its value). Every sub-database is replicated (the state machine is the only writer, deterministically,
including `meta.last_applied`); there is no node-local data in the store to skip. Two nodes that applied
the same log prefix must print the same line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any

import lmdb

from cronraft.raft.codec import from_u64
from cronraft.raft.kv import DATABASES
from cronraft.raft.records import META_LAST_APPLIED

_LEN = struct.Struct(">Q")


def store_path(data_dir: str | Path) -> Path:
    """The LMDB environment folder of a node's data dir (or the folder itself if it is one)."""
    path = Path(data_dir)
    if (path / "state" / "data.mdb").is_file():
        return path / "state"
    if (path / "data.mdb").is_file():
        return path
    raise FileNotFoundError(f"{path}: no LMDB store here (expected {path / 'state' / 'data.mdb'})")


def digest(data_dir: str | Path) -> dict[str, Any]:
    path = store_path(data_dir)
    env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=len(DATABASES), readahead=False)
    try:
        h = hashlib.sha256()
        applied = 0
        with env.begin(write=False) as txn:
            for name in DATABASES:
                try:
                    db = env.open_db(name.encode(), txn=txn, create=False)
                except lmdb.NotFoundError:
                    raise ValueError(
                        f"{path}: sub-database {name!r} is missing: not a Cronraft store"
                    ) from None
                h.update(_LEN.pack(len(name)) + name.encode())
                with txn.cursor(db) as cur:
                    for key, value in cur:
                        h.update(_LEN.pack(len(key)) + key + _LEN.pack(len(value)) + value)
                if name == "meta":
                    raw = txn.get(META_LAST_APPLIED, db=db)
                    applied = 0 if raw is None else from_u64(raw)
        return {"applied_index": applied, "digest": h.hexdigest()}
    finally:
        env.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cronraft.raft.digest", description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir", metavar="DATA_DIR", help="a stopped node's data directory")
    args = p.parse_args(argv)
    try:
        out = digest(args.data_dir)
    except (OSError, ValueError, lmdb.Error) as e:
        print(f"digest: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
