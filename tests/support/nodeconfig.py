"""The `schedd` configuration the real-process harnesses write: tests/integration/harness.py (`Cluster`)
and tests/fault/cluster.py (`FaultCluster`) both build a node's config with `node_config` and render it
with `toml_dumps`.

What each harness adds stays its own: the integration harness appends raw TOML text (`extra_toml`,
`node_toml`: tables the base config does not have), the fault harness merges a parsed table into the base
(`merge`, which may override base keys). The rendering is byte-for-byte what each harness wrote before
this module existed (checked when it was introduced: every harness option, both fault modes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["TEST_STORAGE", "Member", "merge", "node_config", "toml_dumps"]

Member = tuple[str, str, str]  # (node id, gRPC address, Raft address)

# The disk a test node sets aside ahead of its writes (daemon.storage): the default 64 MiB is allocated
# for real (fallocate), so a 3-node test cluster held 192 MiB and the suite tens of GB (CI ran out of
# disk). 4 MiB (2 for the journal, 2 for the store) is ample for a test's writes; tests of the reserve
# itself set their own [storage] table.
TEST_STORAGE: dict[str, Any] = {"reserve_bytes": 4 << 20}


def node_config(
    node_id: str,
    data_dir: Path | str,
    members: Sequence[Member],
    *,
    raft: Mapping[str, Any],
    scheduler: Mapping[str, Any],
    secret_env: str | None = "CRONRAFT_CLUSTER_SECRET",
    insecure: bool = False,
    storage: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One node's config as a table: a replicated cluster of `members`, JSON logs at info level.

    `secret_env`: the variable holding the cluster secret (None: no secret, e.g. a single node).
    `insecure`: the node listens on non-loopback addresses without TLS or tokens and must say so
    (daemon.config; docs/security.md).
    `storage`: a [storage] table (e.g. `TEST_STORAGE`), or None for the node's defaults."""
    cluster: dict[str, Any] = {} if secret_env is None else {"secret_env": secret_env}
    cluster["durability"] = "replicated"
    cluster["members"] = [{"id": m, "grpc_address": g, "raft_address": r} for m, g, r in members]
    cfg: dict[str, Any] = {
        "node": {"id": node_id, "data_dir": str(data_dir)},
        "cluster": cluster,
        "raft": dict(raft),
        "scheduler": dict(scheduler),
        "log": {"level": "info", "format": "json"},
    }
    if storage is not None:
        cfg["storage"] = dict(storage)
    if insecure:
        cfg["insecure"] = True
    return cfg


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def toml_dumps(data: Mapping[str, Any], path: str = "") -> str:
    """A small TOML writer: enough for node configs (tables, arrays of tables, scalars, arrays)."""
    out = [
        f"{_toml_key(k)} = {_toml_value(v)}"
        for k, v in data.items()
        if not isinstance(v, dict) and not _is_table_array(v)
    ]
    for k, v in data.items():
        sub = f"{path}.{_toml_key(k)}" if path else _toml_key(k)
        items = [v] if isinstance(v, dict) else v if _is_table_array(v) else []
        for item in items:
            out.append(f"\n[{sub}]" if isinstance(v, dict) else f"\n[[{sub}]]")
            body = toml_dumps(item, sub).strip("\n")
            if body:
                out.append(body)
    return "\n".join(out).strip("\n") + "\n"


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `extra` laid over it, tables merged key by key."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
