"""RaiseFeatures: the leader raises the cluster's feature level (raft/features.py) once every member
supports the features it names. Never lowered; names this build does not know are kept as well (a node
rolled back below the level applies the same set, and reports it lacks them: raft.features.unsupported)."""

from __future__ import annotations

import re

from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import commands_pb2
from cronraft.raft import features
from cronraft.raft.commands.context import Ctx

_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_FEATURES = 64


def raise_features(ctx: Ctx, cmd: commands_pb2.Command) -> None:
    names = list(cmd.raise_features.features)
    if not names or len(names) > MAX_FEATURES:
        raise InvalidArgument("raise_features.features", f"names 1 to {MAX_FEATURES}, not {len(names)}")
    for i, name in enumerate(names):
        if not _NAME.fullmatch(name):
            raise InvalidArgument(f"raise_features.features[{i}]", f"{name!r} is not a feature name")
    before = features.level(ctx.txn)
    now = features.raise_level(ctx.txn, names)
    if ctx.events is not None and now != before:
        ctx.audit("features", added=sorted(now - before), level=sorted(now))


__all__ = ["raise_features"]
