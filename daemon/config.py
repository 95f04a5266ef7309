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
both TLS and authentication unless the file says `insecure = true` at its top.
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import os
import re
import stat
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from cronraft.daemon.notify import validate_targets
from cronraft.errors import ConfigError, InvalidArgument
from cronraft.proto.v1 import common_pb2
from cronraft.raft.firing import MAX_FIRE_LEAD_MS
from cronraft.raft.validate import NOTIFIER_NAME
from cronraft.tokenfile import check_principal, check_roles

# The ordinary fire lead's bound; only burst staging (stage_lead_ms) goes further, up to MAX_FIRE_LEAD_MS.
MAX_STEADY_LEAD_MS = 5_000

__all__ = [
    "DEFAULT_SECRET_ENV",
    "MIN_SECRET_CHARS",
    "AuthConfig",
    "ClockConfig",
    "ClusterConfig",
    "Config",
    "Durability",
    "LimitsConfig",
    "LogConfig",
    "LogFormat",
    "LogLevel",
    "Member",
    "MetricsConfig",
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

Durability = Literal["replicated", "fsync"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["console", "json"]

DURABILITIES: tuple[Durability, ...] = ("replicated", "fsync")
LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")
LOG_FORMATS: tuple[LogFormat, ...] = ("console", "json")

DEFAULT_SECRET_ENV = "CRONRAFT_CLUSTER_SECRET"
# The cluster secret keys pysyncobj's encryption through PBKDF2 with a fixed salt: a short one could be
# guessed offline from captured Raft traffic. 16 random characters are ~96 bits or more (docs/security.md).
MIN_SECRET_CHARS = 16
JWT_ALGORITHMS = ("HS256", "EdDSA")

# gRPC's default maximum message size; a payload must fit in one request and one Raft entry.
MAX_PAYLOAD_LIMIT = 4 * 1024 * 1024

_MEMBER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "*", ""})


@dataclass(frozen=True, slots=True)
class Member:
    """One member of the cluster: its id and the two addresses the other members and clients dial."""

    id: str
    grpc_address: str  # host:port of the Scheduler/Worker gRPC services (advertised to clients)
    raft_address: str  # host:port pysyncobj binds and peers connect to


@dataclass(frozen=True, slots=True)
class NodeConfig:
    id: str
    data_dir: Path  # absolute: LMDB environment, Raft journal and snapshots live under it


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    secret: str | None = field(repr=False)  # the resolved secret itself, never printed
    durability: Durability
    members: tuple[Member, ...]
    # Where the secret came from, safe to log: "env:NAME", "file:/abs/path", "literal" or None.
    secret_source: str | None = None


@dataclass(frozen=True, slots=True)
class RaftConfig:
    election_timeout_ms: int = 1000
    heartbeat_ms: int = 100
    snapshot_min_entries: int = 100_000
    snapshot_min_time_s: int = 300
    # Also compact the journal once its entries exceed this many bytes (a bulk import is few, large entries).
    snapshot_max_bytes: int = 256 << 20


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """[storage] (daemon.storage; docs/operations.md): the store's size and the disk kept for deletes."""

    map_size_bytes: int = 1 << 30  # the LMDB map at start; it grows (doubling) on demand...
    max_map_size_bytes: int = 64 << 30  # ...up to this: the most the store may hold
    # Space kept for deletes: writes that add data are refused once the store is within this of its
    # maximum, or the disk has less than this free; half of it stays allocated ahead of the journal and
    # half ahead of the store, so that deletes and cancels still apply on a full disk. At most an eighth
    # of the data directory's file system (daemon.storage.effective_reserve).
    reserve_bytes: int = 64 << 20


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """[retention] (raft.retention; docs/operations.md): the cluster-wide defaults of what is kept, which
    a task's own `retention` overrides. 0: no limit. The leader's table is the one in force."""

    keep_executions: int = 1_000  # executions kept per task, the newest (running ones always are)
    execution_max_age_s: int = 30 * 86_400  # an execution is deleted this long after it ended
    ended_task_max_age_s: int = 7 * 86_400  # a completed or cancelled task, this long after it ended
    log_max_age_s: int = 7 * 86_400  # output logs, this long after their first piece
    audit_max_age_s: int = 90 * 86_400  # audit records (raft.audit_trail), this long after their time...
    audit_max_records: int = 100_000  # ...and at most this many, the newest
    prune_interval_ms: int = 1_000  # the leader proposes one retention step this often...
    prune_max_deletes: int = 500  # ...deleting at most this many records...
    prune_max_visits: int = 1_000  # ...and looking at most at this many tasks (sooner while work is left)


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    horizon_ms: int = 20_000  # how far ahead the leader loads due fires into the timing wheel
    lease_ttl_ms: int = 10_000
    heartbeat_interval_ms: int = 2_000  # worker heartbeat; < lease_ttl_ms / 2
    default_timeout_ms: int = 3_600_000
    max_payload_bytes: int = 65_536
    max_attempts: int = 3
    max_running: int = 0  # cluster-wide cap on executions holding a lease (0: no cap)
    aging_step_ms: int = 60_000  # a pending execution gains one priority level per step waited
    # Commit fires (and their leases) this long before their due time; workers hold the start until then.
    fire_lead_ms: int = 500
    # Burst staging: when more fires are due than commit within fire_lead_ms at stage_rate per second,
    # fire up to stage_lead_ms ahead (at most half the horizon: a burst is seen once it is loaded).
    stage_lead_ms: int = 10_000
    stage_rate: int = 2_000


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Quotas ([limits]; raft.quota): the leader stamps the four stored-object limits into the commands
    that create something, and every replica enforces those. Finite, generous defaults."""

    max_tasks: int = 20_000_000  # tasks stored in the cluster
    max_calendars: int = 10_000  # calendars stored in the cluster
    max_pending_per_task: int = 10_000  # executions of one task not yet ended (pending, buffered, running)
    max_executions_per_task: int = 1_000_000  # executions of one task stored (retention keeps fewer)
    # Calls (worker streams among them) one node serves at once; more are refused RESOURCE_EXHAUSTED.
    max_concurrent_rpcs: int = 50_000


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: LogLevel = "info"
    format: LogFormat = "console"


@dataclass(frozen=True, slots=True)
class ClockConfig:
    # How often every node reads every peer's wall clock (one small gRPC call per peer).
    probe_interval_ms: int = 1000
    # A leader whose wall clock is further than this from the cluster median hands leadership away
    # (its due times are corrected meanwhile; docs/guarantees.md, "Clock skew").
    max_offset_ms: int = 1000


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    address: str = ""  # host:port of the Prometheus text endpoint (GET /metrics); empty: off


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """[tls] (daemon.security): TLS on this node's gRPC listener and on its clock probes to peers."""

    cert: Path | None = None  # this node's certificate chain (PEM); TLS is on when set
    key: Path | None = None  # its private key (PEM)
    ca: Path | None = None  # the CA that signed the members' certificates (probes verify peers with it)
    client_ca: Path | None = None  # verifies client certificates (mutual TLS)
    require_client_cert: bool = False  # refuse a TLS handshake without a valid client certificate

    @property
    def enabled(self) -> bool:
        return self.cert is not None

    @property
    def peer_ca(self) -> Path | None:
        return self.ca or self.client_ca


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """[auth] (daemon.security): who may call, and with which roles."""

    token_file: Path | None = None  # hashed bearer tokens (cronraft.tokenfile), reloaded on change
    jwt_key_file: Path | None = None  # HS256: the shared key; EdDSA: the issuer's public key (PEM)
    jwt_algorithm: str = "HS256"
    jwt_issuer: str = ""  # when set, a JWT's `iss` must equal it
    jwt_audience: str = ""  # when set, a JWT's `aud` must contain it
    # Client-certificate identities (a SAN, or the CN) -> roles; needs tls.require_client_cert.
    cert_roles: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def enabled(self) -> bool:
        return self.token_file is not None or self.jwt_key_file is not None or bool(self.cert_roles)


@dataclass(frozen=True, slots=True)
class Config:
    node: NodeConfig
    cluster: ClusterConfig
    raft: RaftConfig
    scheduler: SchedulerConfig
    log: LogConfig
    notify_targets: tuple[common_pb2.NotifyTarget, ...] = ()  # global notification targets
    clock: ClockConfig = ClockConfig()
    metrics: MetricsConfig = MetricsConfig()
    limits: LimitsConfig = LimitsConfig()
    storage: StorageConfig = StorageConfig()
    retention: RetentionConfig = RetentionConfig()
    # [notifiers.NAME]: the notifiers tasks may name (NotifyTarget.notifier), each a webhook_url or a
    # command target; [notify] webhook_hosts: the hosts a task's own webhook_url may name (docs/security.md).
    notifiers: Mapping[str, common_pb2.NotifyTarget] = field(default_factory=dict)
    webhook_hosts: tuple[str, ...] = ()
    tls: TlsConfig = TlsConfig()
    auth: AuthConfig = AuthConfig()
    # Serve a non-loopback gRPC address without TLS or authentication (logged loudly at every start).
    insecure: bool = False
    source: str = field(default="<embedded default>", compare=False)  # where it was loaded from

    @property
    def self_member(self) -> Member:
        """This node's entry in `cluster.members` (validation guarantees there is exactly one)."""
        for member in self.cluster.members:
            if member.id == self.node.id:
                return member
        raise AssertionError("validated config lost its own member")  # pragma: no cover

    @property
    def peers(self) -> tuple[Member, ...]:
        """The other members, in file order."""
        return tuple(m for m in self.cluster.members if m.id != self.node.id)


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
            "metrics",
            "limits",
            "storage",
            "retention",
            "tls",
            "auth",
            "insecure",
        ),
    )
    cluster_t = root.table("cluster", ("secret_env", "secret_file", "secret", "durability", "members"))
    members = _members(cluster_t)
    node = _node(root.table("node", ("id", "data_dir")), members)
    secret, secret_source = _secret(cluster_t, len(members), env)
    self_index = next(i for i, m in enumerate(members) if m.id == node.id)
    raft_address = members[self_index].raft_address
    if secret is None and not is_loopback(split_host_port(raft_address)[0]):
        raise cluster_t.error(
            "secret",
            f"this node's raft address {raft_address} is not loopback, so a secret is required even for one "
            "member (set cluster.secret_env or cluster.secret_file); pysyncobj executes pickled commands "
            "from anyone who can reach the raft port",
        )
    insecure = root.data.get("insecure", False)
    if not isinstance(insecure, bool):
        raise root.error("insecure", f"expected true or false, got {_describe(insecure)}")
    tls = _tls(root.table("tls", _field_names(TlsConfig)))
    auth = _auth(root.table("auth", _field_names(AuthConfig)), tls)
    _check_exposure(root, members[self_index].grpc_address, self_index, tls=tls, auth=auth, insecure=insecure)
    cluster = ClusterConfig(
        secret=secret,
        durability=cluster_t.choice("durability", DURABILITIES, "replicated"),
        members=members,
        secret_source=secret_source,
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
        metrics=_metrics(root.table("metrics", _field_names(MetricsConfig))),
        limits=_limits(root.table("limits", _field_names(LimitsConfig))),
        storage=_storage(root.table("storage", _field_names(StorageConfig))),
        retention=_retention(root.table("retention", _field_names(RetentionConfig))),
        tls=tls,
        auth=auth,
        insecure=insecure,
        source=source,
    )


def _notify(t: _Table) -> tuple[common_pb2.NotifyTarget, ...]:
    """[notify] targets = [{webhook_url = "...", events = ["failure"]}, {command = ["..."], events = []}]"""
    raw = t.data.get("targets", [])
    if not isinstance(raw, list):
        raise t.error("targets", "must be an array of tables")
    out = []
    for i, item in enumerate(raw):
        key = f"targets[{i}]"
        if not isinstance(item, dict) or set(item) - {"webhook_url", "command", "env", "cwd", "events"}:
            raise t.error(key, "a table with webhook_url or command (plus env, cwd, events)")
        target = common_pb2.NotifyTarget()
        if "webhook_url" in item:
            target.webhook_url = str(item["webhook_url"])
        elif "command" in item and isinstance(item["command"], list):
            target.command.argv.extend(str(a) for a in item["command"])
            target.command.env.update({str(k): str(v) for k, v in dict(item.get("env", {})).items()})
            target.command.cwd = str(item.get("cwd", ""))
        else:
            raise t.error(key, "needs webhook_url (a string) or command (an array of strings)")
        for name in item.get("events", []):
            value = getattr(common_pb2, f"NOTIFY_{str(name).upper()}", None)
            if not isinstance(value, int):
                raise t.error(
                    f"{key}.events", f"unknown event {name!r} (failure, timeout, dead_letter, missed)"
                )
            target.events.append(common_pb2.NotifyEvent.ValueType(value))
        out.append(target)
    try:
        validate_targets(out, t.key("targets"))
    except InvalidArgument as e:
        raise ConfigError(f"{t.source}: {e}") from None
    return tuple(out)


_NOTIFIER_KEYS = {"webhook": ("kind", "url"), "command": ("kind", "argv", "env", "cwd")}


def _notifiers(root: _Table) -> dict[str, common_pb2.NotifyTarget]:
    """[notifiers.NAME] tables: kind = "webhook" (url) or kind = "command" (argv, env, cwd). Tasks name
    them (NotifyTarget.notifier); only these commands, the operator's, are ever run by a node."""
    raw = root.data.get("notifiers", {})
    if not isinstance(raw, Mapping):
        raise root.error("notifiers", "expected tables [notifiers.NAME]")
    if len(raw) > 256:
        raise root.error("notifiers", "at most 256 notifiers")
    out: dict[str, common_pb2.NotifyTarget] = {}
    for name, item in raw.items():
        key = f"notifiers.{name}"
        if not NOTIFIER_NAME.match(name):
            raise root.error(key, "a notifier name is 1-64 characters of [A-Za-z0-9_.-]")
        kind = item.get("kind") if isinstance(item, Mapping) else None
        if kind not in _NOTIFIER_KEYS:
            raise root.error(f"{key}.kind", 'set kind = "webhook" (with url) or kind = "command" (with argv)')
        t = _Table(item, key, root.source, _NOTIFIER_KEYS[kind])
        target = common_pb2.NotifyTarget()
        if kind == "webhook":
            target.webhook_url = t.string("url")
        else:
            argv = t.data.get("argv")
            if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
                raise t.error(
                    "argv", "expected a non-empty array of strings (no shell: argv[0] is the program)"
                )
            env = t.data.get("env", {})
            if not isinstance(env, Mapping) or not all(isinstance(v, str) for v in env.values()):
                raise t.error("env", 'expected a table of NAME = "value" strings')
            target.command.argv.extend(argv)
            target.command.env.update(env)
            target.command.cwd = t.string("cwd", "/") if t.has("cwd") else ""
        try:
            validate_targets([target], key)
        except InvalidArgument as e:
            field_name = e.field.replace(f"{key}[0].webhook_url", f"{key}.url")
            field_name = field_name.replace(f"{key}[0].command", key)
            raise ConfigError(f"{root.source}: {field_name}: {e.problem}") from None
        out[name] = target
    return out


def _webhook_hosts(t: _Table) -> tuple[str, ...]:
    """[notify] webhook_hosts = ["hooks.example.com", "*.example.org"]: the hosts a task's own
    webhook_url may name (none by default: tasks name [notifiers.NAME] instead)."""
    raw = t.data.get("webhook_hosts", [])
    if not isinstance(raw, list) or len(raw) > 1024:
        raise t.error("webhook_hosts", "expected an array of at most 1024 host names")
    for i, host in enumerate(raw):
        if not isinstance(host, str) or not re.fullmatch(r"(\*\.)?[A-Za-z0-9.\-:\[\]]{1,253}", host):
            raise t.error(
                f"webhook_hosts[{i}]", f"{host!r}: a host name or address, or *.domain for the names under it"
            )
    return tuple(raw)


def split_host_port(address: str) -> tuple[str, int]:
    """Split ``host:port`` (IPv6 as ``[::1]:port``); raise ValueError saying what is wrong."""
    if not address or any(c.isspace() for c in address):
        raise ValueError("expected host:port without spaces, e.g. 127.0.0.1:50051")
    host, sep, port_s = address.rpartition(":")
    if not sep or not host:
        raise ValueError("expected host:port, e.g. 127.0.0.1:50051")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host:
            raise ValueError("empty IPv6 address between the brackets")
    elif ":" in host:
        raise ValueError("write an IPv6 address in brackets, e.g. [::1]:50051")
    if not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
        raise ValueError(f"port {port_s!r} is not a number in 1..65535")
    return host, int(port_s)


# --- validation helpers -------------------------------------------------------------------------------

_T = TypeVar("_T")


def _field_names(cls: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


class _Table:
    """One TOML table being read, with its dotted path; rejects unknown keys when it is opened."""

    def __init__(self, data: Any, path: str, source: str, allowed: Sequence[str]) -> None:
        self.path = path
        self.source = source
        if not isinstance(data, Mapping):
            raise self.error("", f"expected a table ([{path}]), got {_describe(data)}")
        self.data: Mapping[str, Any] = data
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {self.key(close[0])}? " if close else ""
                raise self.error(key, f"unknown key ({hint}the keys allowed here are: {', '.join(allowed)})")

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path and name else self.path or name

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.key(name)}: {problem}")

    def table(self, name: str, allowed: Sequence[str]) -> _Table:
        return _Table(self.data.get(name, {}), self.key(name), self.source, allowed)

    def has(self, name: str) -> bool:
        return name in self.data

    def string(self, name: str, default: str | None = None) -> str:
        value = self.data.get(name, default)
        if value is None:
            raise self.error(name, "missing; set it")
        if not isinstance(value, str):
            raise self.error(name, f"expected a string, got {_describe(value)}")
        if not value.strip():
            raise self.error(name, "must not be empty")
        return value

    def integer(
        self, name: str, default: int, minimum: int, maximum: int | None = None, why: str = ""
    ) -> int:
        value = self.data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            unit = _unit(name)
            raise self.error(name, f"expected an integer{unit}, got {_describe(value)}")
        reason = f" ({why})" if why else ""
        if value < minimum:
            raise self.error(name, f"{value} is too small: set it to at least {minimum}{reason}")
        if maximum is not None and value > maximum:
            raise self.error(name, f"{value} is too large: set it to at most {maximum}{reason}")
        return value

    def choice(self, name: str, choices: Sequence[_T], default: _T) -> _T:
        value = self.data.get(name, default)
        if value not in choices:
            allowed = " | ".join(f'"{c}"' for c in choices)
            raise self.error(name, f"{_describe(value)} is not allowed; use one of {allowed}")
        return cast(_T, value)


def _unit(name: str) -> str:
    for suffix, unit in (("_ms", "milliseconds"), ("_s", "seconds"), ("_bytes", "bytes")):
        if name.endswith(suffix):
            return f" ({unit})"
    return ""


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    kinds = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    kind = next((k for t, k in kinds.items() if isinstance(value, t)), f"a {type(value).__name__}")
    return f"{value!r} ({kind})"


def _members(cluster: _Table) -> tuple[Member, ...]:
    raw = cluster.data.get("members")
    if raw is None:
        raise cluster.error(
            "members",
            "missing; add one [[cluster.members]] table (id, grpc_address, raft_address) per member, "
            "this node included",
        )
    if not isinstance(raw, list) or not raw:
        raise cluster.error("members", "expected at least one [[cluster.members]] table")
    members: list[Member] = []
    seen_ids: dict[str, str] = {}  # member id -> dotted key that used it first
    seen_addresses: dict[tuple[str, int], str] = {}  # (host, port) -> dotted key that used it first
    for i, item in enumerate(raw):
        t = _Table(
            item, f"{cluster.key('members')}[{i}]", cluster.source, ("id", "grpc_address", "raft_address")
        )
        member_id = t.string("id")
        if not _MEMBER_ID.fullmatch(member_id):
            raise t.error(
                "id",
                f"{member_id!r}: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
            )
        if member_id in seen_ids:
            raise t.error("id", f"duplicate member id {member_id!r} (already used by {seen_ids[member_id]})")
        seen_ids[member_id] = t.key("id")
        addresses: dict[str, str] = {}
        for name in ("grpc_address", "raft_address"):
            address = t.string(name)
            try:
                host, port = split_host_port(address)
            except ValueError as e:
                raise t.error(name, f"{address!r}: {e}") from None
            if host in _WILDCARD_HOSTS and len(raw) > 1:
                raise t.error(
                    name,
                    f"{address!r}: a wildcard host cannot be dialled by the other members and clients; "
                    "use this member's cluster-facing address",
                )
            if (host.lower(), port) in seen_addresses:
                first = seen_addresses[host.lower(), port]
                raise t.error(
                    name, f"duplicate address {address!r} (already used by {first}); give each its own port"
                )
            seen_addresses[host.lower(), port] = t.key(name)
            addresses[name] = address
        members.append(Member(member_id, addresses["grpc_address"], addresses["raft_address"]))
    return tuple(members)


def _node(node: _Table, members: tuple[Member, ...]) -> NodeConfig:
    ids = [m.id for m in members]
    if not node.has("id"):
        raise node.error("id", f"missing; set it to this node's id, one of cluster.members ids {ids}")
    node_id = node.string("id")
    if node_id not in ids:
        raise node.error(
            "id",
            f"{node_id!r} is not one of the cluster.members ids {ids}; fix node.id or add it as a member",
        )
    data_dir = Path(node.string("data_dir", f"./data/{node_id}")).expanduser()
    return NodeConfig(id=node_id, data_dir=data_dir if data_dir.is_absolute() else Path.cwd() / data_dir)


def _secret(cluster: _Table, n_members: int, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The resolved secret and where it came from."""
    given = [k for k in ("secret_env", "secret_file", "secret") if cluster.has(k)]
    if len(given) > 1:
        raise cluster.error(
            given[1], f"set only one of {', '.join(cluster.key(k) for k in given)} (they are alternatives)"
        )
    if not given:
        if n_members > 1:
            raise cluster.error(
                "secret",
                f"a cluster of {n_members} members needs a secret (set cluster.secret_env or "
                "cluster.secret_file); pysyncobj executes pickled commands from anyone who can reach "
                "the raft port",
            )
        return None, None
    kind = given[0]
    if kind == "secret_env":
        var = cluster.string("secret_env")
        value = environ.get(var, "").strip()
        if not value:
            raise cluster.error(
                "secret_env",
                f"environment variable {var} is unset or empty; export it with the cluster secret "
                "(the same on every member), or use cluster.secret_file",
            )
        _check_strength(cluster, "secret_env", value, f"the secret in {var}")
        return value, f"env:{var}"
    if kind == "secret_file":
        raw_path = Path(cluster.string("secret_file")).expanduser()
        path = raw_path if raw_path.is_absolute() else Path.cwd() / raw_path
        with contextlib.suppress(OSError):  # a missing file: the read below says so
            mode = path.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise cluster.error(
                    "secret_file",
                    f"{path} may be read by group or others (mode {stat.S_IMODE(mode):03o}); "
                    f"run `chmod 600 {path}`",
                )
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise cluster.error("secret_file", f"cannot read {path}: {e.strerror or e}") from None
        if not value:
            raise cluster.error("secret_file", f"{path} is empty; write the cluster secret into it")
        _check_strength(cluster, "secret_file", value, f"the secret in {path}")
        return value, f"file:{path}"
    value = cluster.string("secret").strip()
    _check_strength(cluster, "secret", value, "the secret")
    return value, "literal"


def _check_strength(cluster: _Table, key: str, value: str, what: str) -> None:
    if len(value) < MIN_SECRET_CHARS:
        raise cluster.error(
            key,
            f"{what} has {len(value)} characters; use at least {MIN_SECRET_CHARS} random ones (e.g. "
            "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`): it keys the raft "
            "encryption, and a short one can be guessed from captured traffic",
        )


def is_loopback(host: str) -> bool:
    """Whether `host` (from split_host_port) can only be reached from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost, or a wildcard: reachable from elsewhere


def _path(t: _Table, name: str) -> Path | None:
    if not t.has(name):
        return None
    raw = Path(t.string(name)).expanduser()
    return raw if raw.is_absolute() else Path.cwd() / raw


def _tls(t: _Table) -> TlsConfig:
    cert, key = _path(t, "cert"), _path(t, "key")
    if (cert is None) != (key is None):
        given, missing = ("cert", "key") if cert is not None else ("key", "cert")
        raise t.error(missing, f"missing: tls.{given} is set, so set tls.{missing} too (PEM files)")
    client_ca = _path(t, "client_ca")
    require = t.data.get("require_client_cert", False)
    if not isinstance(require, bool):
        raise t.error("require_client_cert", f"expected true or false, got {_describe(require)}")
    if require and client_ca is None:
        raise t.error("require_client_cert", "needs tls.client_ca (the CA that signs client certificates)")
    if client_ca is not None and not require:
        # gRPC Python does not request a client certificate unless it requires one: an optional
        # certificate would never be seen, let alone verified.
        raise t.error(
            "client_ca",
            "client certificates are checked only with tls.require_client_cert = true; set it, or remove "
            "tls.client_ca (use tls.ca for the CA of the members' certificates)",
        )
    if cert is None and (client_ca is not None or t.has("ca")):
        raise t.error("cert", "missing: set tls.cert and tls.key (this node's certificate) to turn TLS on")
    return TlsConfig(cert=cert, key=key, ca=_path(t, "ca"), client_ca=client_ca, require_client_cert=require)


def _auth(t: _Table, tls: TlsConfig) -> AuthConfig:
    algorithm = t.choice("jwt_algorithm", JWT_ALGORITHMS, "HS256")
    jwt_key = _path(t, "jwt_key_file")
    for name in ("jwt_algorithm", "jwt_issuer", "jwt_audience"):
        if t.has(name) and jwt_key is None:
            raise t.error(name, "only used with auth.jwt_key_file; set that too, or remove this key")
    issuer = t.string("jwt_issuer") if t.has("jwt_issuer") else ""
    audience = t.string("jwt_audience") if t.has("jwt_audience") else ""
    raw_roles = t.data.get("cert_roles", {})
    if not isinstance(raw_roles, Mapping):
        raise t.error("cert_roles", 'expected a table: identity = ["role", ...]')
    cert_roles: list[tuple[str, tuple[str, ...]]] = []
    for identity, roles in raw_roles.items():
        try:
            check_principal(identity, t.key(f"cert_roles.{identity}"))
            check_roles(roles, t.key(f"cert_roles.{identity}"))
        except InvalidArgument as e:
            raise ConfigError(f"{t.source}: {e}") from None
        cert_roles.append((identity, tuple(roles)))
    if cert_roles and not tls.require_client_cert:
        raise t.error(
            "cert_roles",
            "client certificates are verified only with tls.client_ca and tls.require_client_cert = true",
        )
    return AuthConfig(
        token_file=_path(t, "token_file"),
        jwt_key_file=jwt_key,
        jwt_algorithm=algorithm,
        jwt_issuer=issuer,
        jwt_audience=audience,
        cert_roles=tuple(cert_roles),
    )


def _check_exposure(
    root: _Table, address: str, index: int, *, tls: TlsConfig, auth: AuthConfig, insecure: bool
) -> None:
    """A gRPC address others can reach needs TLS and authentication, unless `insecure = true`."""
    if insecure or is_loopback(split_host_port(address)[0]):
        return
    missing = [
        what
        for what, ok in (
            ("TLS ([tls] cert, key)", tls.enabled),
            ("authentication ([auth] token_file, jwt_key_file or cert_roles)", auth.enabled),
        )
        if not ok
    ]
    if missing:
        raise root.error(
            f"cluster.members[{index}].grpc_address",
            f"{address!r} is not a loopback address and this node has no {' and no '.join(missing)}: "
            "anyone who reaches it could run commands on the workers. Configure them (docs/security.md, "
            "`schedctl tls init`, `schedctl token create`), or write `insecure = true` at the top of the "
            "file to serve it unprotected anyway",
        )


def _raft(t: _Table) -> RaftConfig:
    d = RaftConfig()
    election = t.integer(
        "election_timeout_ms", d.election_timeout_ms, 200, why="shorter timeouts cause spurious elections"
    )
    heartbeat = t.integer("heartbeat_ms", d.heartbeat_ms, 1)
    if heartbeat * 2 >= election:
        raise t.error(
            "heartbeat_ms",
            f"{heartbeat} must be less than half of raft.election_timeout_ms ({election}), or followers "
            f"start elections between heartbeats; lower it to at most {(election - 1) // 2}",
        )
    return RaftConfig(
        election_timeout_ms=election,
        heartbeat_ms=heartbeat,
        snapshot_min_entries=t.integer("snapshot_min_entries", d.snapshot_min_entries, 1),
        snapshot_min_time_s=t.integer("snapshot_min_time_s", d.snapshot_min_time_s, 1),
        snapshot_max_bytes=t.integer(
            "snapshot_max_bytes",
            d.snapshot_max_bytes,
            1 << 20,
            2 << 30,
            why="pysyncobj's journal cannot exceed 4 GiB, and each snapshot copies the whole store",
        ),
    )


def _storage(t: _Table) -> StorageConfig:
    d = StorageConfig()
    map_size = t.integer("map_size_bytes", d.map_size_bytes, 1 << 20)
    largest = t.integer("max_map_size_bytes", max(d.max_map_size_bytes, map_size), 1 << 20)
    if largest < map_size:
        raise t.error(
            "max_map_size_bytes",
            f"{largest} is below storage.map_size_bytes ({map_size}): the map only grows; raise it to at "
            f"least {map_size} or lower storage.map_size_bytes",
        )
    reserve = t.integer("reserve_bytes", d.reserve_bytes, 1 << 20)
    if reserve * 2 > largest:
        raise t.error(
            "reserve_bytes",
            f"{reserve} is more than half of storage.max_map_size_bytes ({largest}): little would be left "
            f"for data; lower it to at most {largest // 2}",
        )
    return StorageConfig(map_size_bytes=map_size, max_map_size_bytes=largest, reserve_bytes=reserve)


def _retention(t: _Table) -> RetentionConfig:
    d = RetentionConfig()
    return RetentionConfig(
        keep_executions=t.integer("keep_executions", d.keep_executions, 0, why="0 keeps every execution"),
        execution_max_age_s=t.integer("execution_max_age_s", d.execution_max_age_s, 0),
        ended_task_max_age_s=t.integer("ended_task_max_age_s", d.ended_task_max_age_s, 0),
        log_max_age_s=t.integer("log_max_age_s", d.log_max_age_s, 0),
        audit_max_age_s=t.integer("audit_max_age_s", d.audit_max_age_s, 0),
        audit_max_records=t.integer("audit_max_records", d.audit_max_records, 0),
        prune_interval_ms=t.integer(
            "prune_interval_ms", d.prune_interval_ms, 10, why="each step is one Raft entry"
        ),
        prune_max_deletes=t.integer(
            "prune_max_deletes", d.prune_max_deletes, 1, 10_000, why="one step is one apply on every node"
        ),
        prune_max_visits=t.integer(
            "prune_max_visits", d.prune_max_visits, 1, 100_000, why="one step is one apply on every node"
        ),
    )


def _scheduler(t: _Table) -> SchedulerConfig:
    d = SchedulerConfig()
    ttl = t.integer("lease_ttl_ms", d.lease_ttl_ms, 100)
    heartbeat = t.integer("heartbeat_interval_ms", d.heartbeat_interval_ms, 1)
    if heartbeat * 2 >= ttl:
        raise t.error(
            "heartbeat_interval_ms",
            f"{heartbeat} must be less than half of scheduler.lease_ttl_ms ({ttl}), so that a worker "
            f"renews at least twice before its lease expires; lower it to at most {(ttl - 1) // 2} "
            "or raise scheduler.lease_ttl_ms",
        )
    horizon = t.integer("horizon_ms", d.horizon_ms, 100)
    if t.has("stage_lead_ms"):
        stage_lead = t.integer(
            "stage_lead_ms",
            d.stage_lead_ms,
            0,
            MAX_FIRE_LEAD_MS,
            why="a change to a task no longer affects a fire committed ahead",
        )
        if stage_lead > horizon // 2:
            raise t.error(
                "stage_lead_ms",
                f"{stage_lead} must be at most half of scheduler.horizon_ms ({horizon}): the leader sees a "
                f"burst only once the horizon has loaded it; lower it to at most {horizon // 2} or raise "
                "scheduler.horizon_ms",
            )
    else:  # the default follows a shorter horizon
        stage_lead = min(d.stage_lead_ms, horizon // 2)
    return SchedulerConfig(
        horizon_ms=horizon,
        lease_ttl_ms=ttl,
        heartbeat_interval_ms=heartbeat,
        default_timeout_ms=t.integer("default_timeout_ms", d.default_timeout_ms, 1),
        max_payload_bytes=t.integer(
            "max_payload_bytes",
            d.max_payload_bytes,
            1,
            MAX_PAYLOAD_LIMIT,
            why="a payload must fit in one gRPC message and one Raft entry; pass large inputs by reference",
        ),
        max_attempts=t.integer("max_attempts", d.max_attempts, 1),
        max_running=t.integer("max_running", d.max_running, 0),
        aging_step_ms=t.integer("aging_step_ms", d.aging_step_ms, 1),
        fire_lead_ms=t.integer(
            "fire_lead_ms",
            d.fire_lead_ms,
            0,
            MAX_STEADY_LEAD_MS,
            why="a change to a task no longer affects a fire committed ahead; keep the lead short",
        ),
        stage_lead_ms=stage_lead,
        stage_rate=t.integer("stage_rate", d.stage_rate, 1),
    )


def _log(t: _Table) -> LogConfig:
    d = LogConfig()
    return LogConfig(
        level=t.choice("level", LOG_LEVELS, d.level),
        format=t.choice("format", LOG_FORMATS, d.format),
    )


def _clock(t: _Table) -> ClockConfig:
    d = ClockConfig()
    return ClockConfig(
        probe_interval_ms=t.integer(
            "probe_interval_ms",
            d.probe_interval_ms,
            50,
            60_000,
            why="each probe is one gRPC call per peer; a slow probe detects a skewed clock late",
        ),
        max_offset_ms=t.integer(
            "max_offset_ms",
            d.max_offset_ms,
            100,
            why="below 100 ms network noise on the probes could make a healthy leader step down",
        ),
    )


def _limits(t: _Table) -> LimitsConfig:
    d = LimitsConfig()
    return LimitsConfig(
        max_tasks=t.integer("max_tasks", d.max_tasks, 1),
        max_calendars=t.integer("max_calendars", d.max_calendars, 1),
        max_pending_per_task=t.integer("max_pending_per_task", d.max_pending_per_task, 1),
        max_executions_per_task=t.integer("max_executions_per_task", d.max_executions_per_task, 1),
        max_concurrent_rpcs=t.integer(
            "max_concurrent_rpcs",
            d.max_concurrent_rpcs,
            100,
            why="every connected worker holds one call (its stream), and clients need room too",
        ),
    )


def _metrics(t: _Table) -> MetricsConfig:
    if not t.has("address"):
        return MetricsConfig()
    address = t.data["address"]
    if not isinstance(address, str):
        raise t.error("address", f"expected a string host:port, got {_describe(address)}")
    if address:
        try:
            split_host_port(address)
        except ValueError as e:
            raise t.error("address", f"{address!r}: {e}") from None
    return MetricsConfig(address=address)
