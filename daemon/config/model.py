"""The configuration's shape: one frozen dataclass per TOML table, with the defaults in force when a key
is absent, and the value sets some keys accept. Validation lives beside it (daemon.config.loader and one
module per group of tables)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cronraft.bounds import DEFAULT_RESULT_BYTES
from cronraft.proto.v1 import common_pb2

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
    # A follower relays workers' streams and clients' writes to the leader (daemon.relay); false: it
    # answers them with a redirect to the leader, as before relaying existed.
    relay: bool = True
    relay_max_streams: int = 10_000  # worker streams one follower relays at once (more: RESOURCE_EXHAUSTED)
    relay_max_writes: int = 1_000  # client writes one follower has forwarded and not yet answered
    # Member ids that should lead when they are healthy (docs/multi-region.md): a leader outside the list
    # hands leadership to one of them once it is connected and caught up. Empty: any member may lead.
    preferred_leader: tuple[str, ...] = ()


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
    # The largest result ($CRONRAFT_RESULT_FILE) an attempt may hand back: workers are told (Welcome), and
    # a larger one fails its attempt, saying so (at most cronraft.bounds.MAX_RESULT_BYTES: one Raft entry).
    max_result_bytes: int = DEFAULT_RESULT_BYTES


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
class HttpConfig:
    """[http] (daemon.http): the node's HTTP listener: /metrics, /healthz, /readyz and the dashboard."""

    address: str = ""  # host:port; empty: no listener. Every shipped config sets one on loopback.


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
    # Client-certificate identities (a SAN, or the CN) -> roles, each ROLE (every namespace) or
    # ROLE@NAMESPACE (cronraft.tokenfile.parse_role); needs tls.require_client_cert.
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
    http: HttpConfig = HttpConfig()
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
    # Deprecated keys the file used, each with what to write instead: the node logs them as warnings.
    deprecations: tuple[str, ...] = field(default=(), compare=False)

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
