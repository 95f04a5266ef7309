"""A node's configuration: one TOML file, validated once at load into frozen dataclasses.

`load_config(path)` reads a file, `config_from_dict(data, source)` validates an already parsed mapping,
and `default_config()` is the embedded default: exactly what cluster-configs/single-node.toml says
(a test holds the two equal). Every problem raises `ConfigError` with a message of the form
``<file>: <dotted.key>: <what is wrong and what to change>``. Unknown keys are errors: a typo must never
be silently ignored and leave a default in force.

Paths: relative paths (`node.data_dir`, `cluster.secret_file`) resolve against the *current working
directory* of the process that loads the file, not against the file's folder, so that the shipped
configs work from the repository root (`./data/node1`). They are made absolute at load, so a later
`chdir` changes nothing.

The cluster secret is resolved at load (from `cluster.secret_env`, `cluster.secret_file` or, discouraged,
the literal `cluster.secret`) and is required as soon as the cluster has more than one member:
pysyncobj unpickles whatever arrives on the Raft port, so without a password anyone who can reach that
port can run code in the daemon (see shared/docs/fault-testing.md, section 4.2). It is also required
when this node's Raft address is not loopback (one node included), and must be at least
MIN_SECRET_CHARS characters long.

Security (docs/security.md): `[tls]` (this node's certificate, the CAs it trusts) and `[auth]` (token
file, JWT key, client-certificate identities) are validated for shape here; their files are read when
the node starts (daemon.security). A node whose gRPC address is not loopback refuses to start without
both TLS and authentication unless the file says `insecure = true` at its top; so does its HTTP listener
(`[http] address`, daemon.http) on a non-loopback address.

The package, one job a module: `model` (the frozen dataclasses), `reader` (`_Table`: reading a table with
errors that name the field), `loader` (`load_config`, `config_from_dict`, `default_config`), `cluster`
([node], [cluster], the secret), `security` ([tls], [auth], exposure), `notify` ([notify], [notifiers]),
`tables` (the tunables: [raft], [storage], [retention], [scheduler], [log], [clock], [limits], [http])
and `addresses` (`split_host_port`, `is_loopback`).
"""

from cronraft.daemon.config.addresses import is_loopback, split_host_port
from cronraft.daemon.config.loader import config_from_dict, default_config, load_config
from cronraft.daemon.config.model import (
    DEFAULT_SECRET_ENV,
    MIN_SECRET_CHARS,
    AuthConfig,
    ClockConfig,
    ClusterConfig,
    Config,
    Durability,
    HttpConfig,
    LimitsConfig,
    LogConfig,
    LogFormat,
    LogLevel,
    Member,
    NodeConfig,
    RaftConfig,
    RetentionConfig,
    SchedulerConfig,
    StorageConfig,
    TlsConfig,
)

__all__ = [
    "DEFAULT_SECRET_ENV",
    "MIN_SECRET_CHARS",
    "AuthConfig",
    "ClockConfig",
    "ClusterConfig",
    "Config",
    "Durability",
    "HttpConfig",
    "LimitsConfig",
    "LogConfig",
    "LogFormat",
    "LogLevel",
    "Member",
    "NodeConfig",
    "RaftConfig",
    "RetentionConfig",
    "SchedulerConfig",
    "StorageConfig",
    "TlsConfig",
    "config_from_dict",
    "default_config",
    "is_loopback",
    "load_config",
    "split_host_port",
]
