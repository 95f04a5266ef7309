"""The worker's settings (`WorkerConfig`, validated once), the defaults of its timing, and who its
process payloads run as (`process_identity`, from the policy's [run_as])."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cronraft.bounds import (
    DEFAULT_RESULT_BYTES,
    MAX_RESULT_BYTES,
    MAX_TAG_LEN,
    MAX_WORKER_CAPACITY,
    MAX_WORKER_ID,
    MAX_WORKER_LABELS,
    MAX_WORKER_QUEUES,
)
from cronraft.client._policy import WorkerPolicy
from cronraft.client._process_runner import ProcessIdentity
from cronraft.client._routing import DEFAULT_SERVER
from cronraft.client._runner import DEFAULT_KILL_GRACE_S, DEFAULT_OUTPUT_TAIL_BYTES
from cronraft.client._transport import Transport
from cronraft.client.handlers import MAX_RETURN_VALUE_BYTES
from cronraft.errors import ConfigError

# Used only when neither the lease nor the Welcome carries a TTL (a server bug): renew or die in 10 s.
FALLBACK_LEASE_TTL_S = 10.0
FALLBACK_HEARTBEAT_S = 1.0


@dataclass(frozen=True)
class WorkerConfig:
    """A worker's settings, validated once."""

    servers: tuple[str, ...]
    worker_id: str
    outbox_dir: Path
    capacity: int = 4
    queues: tuple[str, ...] = ("default",)
    labels: Mapping[str, str] = field(default_factory=dict)
    kill_grace_s: float = DEFAULT_KILL_GRACE_S
    output_tail_bytes: int = DEFAULT_OUTPUT_TAIL_BYTES
    shutdown_grace_s: float = 10.0
    backoff_initial_s: float = 0.1
    # Short: while no leader is known the worker must find the new one well inside a lease TTL, or its
    # running attempts self-fence and its finished results arrive after their leases expired (fault
    # scenario S2 at soak size: reconnects 4-5 s after the new leader was ready, 8 duplicate runs).
    backoff_max_s: float = 0.5
    output_flush_interval_s: float = 0.2
    result_resend_s: float = 30.0  # resend results not acknowledged on the same stream after this long
    fence_check_interval_s: float = 0.05
    max_return_value_bytes: int = MAX_RETURN_VALUE_BYTES  # a handler's JSON return value, at most
    # A process payload's result ($CRONRAFT_RESULT_FILE), at most: larger fails the attempt. The leader's
    # bound ([limits] max_result_bytes, told in its Welcome) applies when smaller.
    max_result_bytes: int = DEFAULT_RESULT_BYTES
    # What this worker agrees to run (client/_policy.py); the default refuses shell payloads, HTTP to
    # loopback/private/link-local/metadata addresses, and passes payloads only a few variables.
    policy: WorkerPolicy = field(default_factory=WorkerPolicy)
    transport: Transport = field(default_factory=Transport)  # TLS and token (client._transport)

    def __post_init__(self) -> None:
        if not self.servers or any(not s for s in self.servers):
            raise ConfigError("servers: give at least one HOST:PORT (e.g. --server 127.0.0.1:50051)")
        if not self.worker_id:
            raise ConfigError("worker_id: must not be empty (--id)")
        # The leader refuses a Hello past these (cronraft.bounds): say so at start, not at each connect.
        wid = self.worker_id
        if len(wid) > MAX_WORKER_ID or not wid.isprintable() or any(c.isspace() for c in wid):
            raise ConfigError(f"worker_id: 1 to {MAX_WORKER_ID} printable characters without spaces (--id)")
        if not 1 <= self.capacity <= MAX_WORKER_CAPACITY:
            raise ConfigError(
                f"capacity: must be between 1 and {MAX_WORKER_CAPACITY}, got {self.capacity} (--capacity)"
            )
        if not self.queues or any(not q for q in self.queues):
            raise ConfigError("queues: queue names must not be empty (--queue)")
        if len(self.queues) > MAX_WORKER_QUEUES:
            raise ConfigError(f"queues: at most {MAX_WORKER_QUEUES} (--queue)")
        if len(self.labels) > MAX_WORKER_LABELS or any(
            not k or len(k) > MAX_TAG_LEN or len(v) > MAX_TAG_LEN for k, v in self.labels.items()
        ):
            raise ConfigError(
                f"labels: at most {MAX_WORKER_LABELS}, keys 1 to {MAX_TAG_LEN} characters, values at most "
                f"{MAX_TAG_LEN} (--label)"
            )
        if self.kill_grace_s < 0:
            raise ConfigError(f"kill_grace_s: must be >= 0, got {self.kill_grace_s} (--kill-grace)")
        if self.shutdown_grace_s < 0:
            raise ConfigError(f"shutdown_grace_s: must be >= 0, got {self.shutdown_grace_s}")
        if self.output_tail_bytes < 0:
            raise ConfigError(f"output_tail_bytes: must be >= 0, got {self.output_tail_bytes}")
        if self.max_return_value_bytes < 0:
            raise ConfigError(f"max_return_value_bytes: must be >= 0, got {self.max_return_value_bytes}")
        if not 0 <= self.max_result_bytes <= MAX_RESULT_BYTES:
            raise ConfigError(
                f"max_result_bytes: must be between 0 and {MAX_RESULT_BYTES}, got {self.max_result_bytes}"
            )
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ConfigError("backoff: need 0 < backoff_initial_s <= backoff_max_s")


def process_identity(policy: WorkerPolicy) -> ProcessIdentity | None:
    """Who process payloads run as: the policy's run_as user and group (ConfigError when unknown, or
    when the worker is not root and they are not its own); None: as the worker itself."""
    import grp
    import pwd

    if policy.run_as_user is None:
        return None
    name = policy.run_as_user
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, OverflowError):
        raise ConfigError(f"{policy.source}: run_as.user: no user {name!r} on this machine") from None
    gid = entry.pw_gid
    if policy.run_as_group is not None:
        group = policy.run_as_group
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
        except (KeyError, OverflowError):
            raise ConfigError(f"{policy.source}: run_as.group: no group {group!r} on this machine") from None
    if os.geteuid() != 0:
        if (entry.pw_uid, gid) == (os.geteuid(), os.getegid()):
            return None  # already that user
        raise ConfigError(
            f"{policy.source}: run_as: the worker runs as uid {os.geteuid()}, not root: it cannot switch "
            f"to {name!r}; start it as root, or remove [run_as]"
        )
    env = {"HOME": entry.pw_dir, "USER": entry.pw_name, "LOGNAME": entry.pw_name}
    return ProcessIdentity(uid=entry.pw_uid, gid=gid, env=env)


__all__ = [
    "DEFAULT_SERVER",  # the SDK's (client._routing), for schedworker --server
    "FALLBACK_HEARTBEAT_S",
    "FALLBACK_LEASE_TTL_S",
    "WorkerConfig",
    "process_identity",
]
