"""Process shim for the fault harness's proxy mode: `python -m tests.fault._shim MODULE ARGS...`.

It patches a few things in this process only, then runs MODULE as `__main__`:

- CRONRAFT_FAULT_RAFT_BIND=host:port: pysyncobj binds the Raft server there instead of the node's
  `raft_address`. The config's `raft_address` is then the address of the harness's proxy in front of the
  node; pysyncobj names a peer by that string (it is what a peer sends when it connects), so every node
  must dial the same string the node calls itself, and only the bind address can differ.
- CRONRAFT_FAULT_RAFT_SOURCE=ip: outgoing Raft connections bind this loopback source address
  (127.0.0.x), so that the proxy of the peer can tell which node a connection comes from (cut_link).
- CRONRAFT_FAULT_ADDR_MAP=a=b,c=d: gRPC channels the worker opens to `a` go to `b` instead (its own
  per-worker proxies, also after a NotLeader redirect to the leader's advertised address).

Nothing here is used in netns mode, where the kernel does all of this.
"""

from __future__ import annotations

import os
import runpy
import socket
import sys
import types
from typing import Any


def _patch_raft(bind: str | None, source: str | None) -> None:
    if bind:
        from cronraft.raft import syncobj_replicator as replicator

        original = replicator.SyncObjReplicator._conf

        def _conf(self: Any) -> Any:
            conf = original(self)
            conf.bindAddress = bind
            return conf

        replicator.SyncObjReplicator._conf = _conf  # type: ignore[method-assign]
    if source:
        from pysyncobj import tcp_connection  # type: ignore[import-untyped,unused-ignore]

        class _SourceBoundSocket(socket.socket):
            def __init__(self, family: int = -1, type: int = -1, proto: int = -1, fileno: Any = None) -> None:
                super().__init__(family, type, proto, fileno)
                if fileno is None and family == socket.AF_INET:
                    self.bind((source, 0))

        shim = types.ModuleType("socket")
        shim.__dict__.update(socket.__dict__)
        shim.socket = _SourceBoundSocket  # type: ignore[attr-defined]
        tcp_connection.socket = shim


def _patch_grpc(mapping: str | None) -> None:
    if not mapping:
        return
    table = dict(item.split("=", 1) for item in mapping.split(",") if "=" in item)
    import grpc.aio

    original = grpc.aio.insecure_channel

    def insecure_channel(target: str, *args: Any, **kwargs: Any) -> Any:
        return original(table.get(target, target), *args, **kwargs)

    grpc.aio.insecure_channel = insecure_channel


def main() -> None:
    if len(sys.argv) < 2:
        print("usage: python -m tests.fault._shim MODULE [ARGS...]", file=sys.stderr)
        raise SystemExit(2)
    module = sys.argv[1]
    _patch_raft(os.environ.get("CRONRAFT_FAULT_RAFT_BIND"), os.environ.get("CRONRAFT_FAULT_RAFT_SOURCE"))
    _patch_grpc(os.environ.get("CRONRAFT_FAULT_ADDR_MAP"))
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
