"""`load_config`, `config_from_dict` and `default_config`: the root table, read by composing the
parsers of each table (daemon.config.cluster, .security, .notify, .tables)."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cronraft.daemon.config.addresses import split_host_port
from cronraft.daemon.config.cluster import (
    RELAY_KEYS,
    _members,
    _node,
    _relay,
    _require_secret_off_loopback,
    _secret,
)
from cronraft.daemon.config.model import (
    DURABILITIES,
    AuthConfig,
    ClockConfig,
    ClusterConfig,
    Config,
    HttpConfig,
    LimitsConfig,
    LogConfig,
    RaftConfig,
    RetentionConfig,
    SchedulerConfig,
    StorageConfig,
    TlsConfig,
)
from cronraft.daemon.config.notify import _notifiers, _notify, _webhook_hosts
from cronraft.daemon.config.reader import _describe, _field_names, _Table
from cronraft.daemon.config.security import _auth, _check_exposure, _tls
from cronraft.daemon.config.tables import (
    _clock,
    _http,
    _limits,
    _log,
    _raft,
    _retention,
    _scheduler,
    _storage,
)
from cronraft.errors import ConfigError

# The embedded default: keep it identical to cluster-configs/single-node.toml (tests/unit/test_config.py).
_DEFAULT_TOML = """
[node]
id = "node1"
data_dir = "./data/node1"

[cluster]
durability = "replicated"

[[cluster.members]]
id = "node1"
grpc_address = "127.0.0.1:50051"
raft_address = "127.0.0.1:50061"

[http]
address = "127.0.0.1:50071"
"""


def default_config() -> Config:
    """The single-node configuration `schedd` uses when it is given no --config."""
    return config_from_dict(tomllib.loads(_DEFAULT_TOML), "<embedded default>")


def load_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML file. `environ` (default: os.environ) resolves `cluster.secret_env`."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        where = "" if Path(source).is_absolute() else f" (relative to the working directory {Path.cwd()})"
        raise ConfigError(f"{source}: file not found{where}") from None
    except OSError as e:
        raise ConfigError(f"{source}: cannot read: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    return config_from_dict(data, source, environ=environ)


def config_from_dict(
    data: Mapping[str, Any], source: str, *, environ: Mapping[str, str] | None = None
) -> Config:
    """Validate a parsed TOML document; `source` names it in error messages."""
    env = os.environ if environ is None else environ
    root = _Table(
        data,
        "",
        source,
        (
            "node",
            "cluster",
            "raft",
            "scheduler",
            "log",
            "notify",
            "notifiers",
            "clock",
            "http",
            "metrics",
            "limits",
            "storage",
            "retention",
            "tls",
            "auth",
            "insecure",
        ),
    )
    cluster_t = root.table(
        "cluster", ("secret_env", "secret_file", "secret", "durability", "members", *RELAY_KEYS)
    )
    members = _members(cluster_t)
    node = _node(root.table("node", ("id", "data_dir")), members)
    secret, secret_source = _secret(cluster_t, len(members), env)
    self_index = next(i for i, m in enumerate(members) if m.id == node.id)
    _require_secret_off_loopback(cluster_t, secret, members[self_index].raft_address)
    insecure = root.data.get("insecure", False)
    if not isinstance(insecure, bool):
        raise root.error("insecure", f"expected true or false, got {_describe(insecure)}")
    tls = _tls(root.table("tls", _field_names(TlsConfig)))
    auth = _auth(root.table("auth", _field_names(AuthConfig)), tls)
    me = members[self_index]
    key = f"cluster.members[{self_index}].grpc_address"
    _check_exposure(root, me.grpc_address, key, tls=tls, auth=auth, insecure=insecure)
    deprecations: list[str] = []
    http_t = root.table("http", _field_names(HttpConfig))
    http = _http(http_t, root.table("metrics", ("address",)), deprecations)
    if http.address:
        key = "http.address" if http_t.has("address") else "metrics.address"
        _check_exposure(root, http.address, key, tls=tls, auth=auth, insecure=insecure)
        _check_distinct(root, key, http.address, me.grpc_address, me.raft_address)
    cluster = ClusterConfig(
        secret=secret,
        durability=cluster_t.choice("durability", DURABILITIES, "replicated"),
        members=members,
        secret_source=secret_source,
        **_relay(cluster_t, members),
    )
    return Config(
        node=node,
        cluster=cluster,
        raft=_raft(root.table("raft", _field_names(RaftConfig))),
        scheduler=_scheduler(root.table("scheduler", _field_names(SchedulerConfig))),
        log=_log(root.table("log", _field_names(LogConfig))),
        notify_targets=_notify(root.table("notify", ("targets", "webhook_hosts"))),
        notifiers=_notifiers(root),
        webhook_hosts=_webhook_hosts(root.table("notify", ("targets", "webhook_hosts"))),
        clock=_clock(root.table("clock", _field_names(ClockConfig))),
        http=http,
        limits=_limits(root.table("limits", _field_names(LimitsConfig))),
        storage=_storage(root.table("storage", _field_names(StorageConfig))),
        retention=_retention(root.table("retention", _field_names(RetentionConfig))),
        tls=tls,
        auth=auth,
        insecure=insecure,
        source=source,
        deprecations=tuple(deprecations),
    )


def _check_distinct(root: _Table, key: str, address: str, grpc_address: str, raft_address: str) -> None:
    """The HTTP listener cannot share this node's gRPC or Raft address."""
    for other, name in ((grpc_address, "gRPC"), (raft_address, "Raft")):
        if split_host_port(address) == split_host_port(other):
            raise root.error(key, f"{address!r} is this node's {name} address too: give it a port of its own")
