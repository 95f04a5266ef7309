"""The one error tree of Cronraft, and its mapping to gRPC status codes.

Every error the project raises on purpose derives from `CronraftError`. Each class names the gRPC
status code it maps to (by name, so that this module imports nothing: any layer may use it).
"""

from __future__ import annotations


class CronraftError(Exception):
    """Base of every Cronraft error."""

    grpc_code = "INTERNAL"


class InvalidArgument(CronraftError):
    """Bad input; `field` names the offending field (dotted path). Nothing was changed."""

    grpc_code = "INVALID_ARGUMENT"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class ConfigError(CronraftError):
    """A configuration file is invalid; the message says what to change."""

    grpc_code = "FAILED_PRECONDITION"


class NotFound(CronraftError):
    grpc_code = "NOT_FOUND"


class FailedPrecondition(CronraftError):
    """The request is valid but the current state forbids it (e.g. cancelling a cancelled task)."""

    grpc_code = "FAILED_PRECONDITION"


class StaleToken(FailedPrecondition):
    """A result, renewal or output chunk carried a fencing token that is no longer current."""


class NotLeader(CronraftError):
    """This node cannot accept writes; `leader_address` is the gRPC address of the leader if known."""

    grpc_code = "UNAVAILABLE"

    def __init__(self, leader_address: str | None) -> None:
        super().__init__(f"not the leader; leader is {leader_address or 'unknown'}")
        self.leader_address = leader_address


class Unavailable(CronraftError):
    """No quorum, shutting down, or the node is not ready yet. Safe to retry."""

    grpc_code = "UNAVAILABLE"


class OutcomeUnknown(CronraftError):
    """A proposal timed out or leadership changed before it committed: it may or may not apply.

    Retrying with the same request id is safe: the state machine deduplicates request ids.
    """

    grpc_code = "UNAVAILABLE"


class ResourceExhausted(CronraftError):
    grpc_code = "RESOURCE_EXHAUSTED"


class StorageError(ResourceExhausted):
    """The store failed for a reason of this node's environment (map full, disk full, I/O error), not
    because of the command: the same write may succeed later, or on another replica. The state machine
    never records it as a command's outcome; the replicator retries the entry (raft.state).

    `kind` says which: "map_full" (the LMDB map is full: it can grow), "disk_full" (no space left on the
    file system, or a quota), "io" (anything else: an I/O error, too many readers...)."""

    def __init__(self, message: str, *, kind: str = "io") -> None:
        super().__init__(message)
        self.kind = kind


class InternalError(CronraftError):
    """A command failed inside the state machine with an error it did not expect (a bug, or input no check
    caught): it was not applied, and every node recorded the same outcome (the log moved on)."""

    grpc_code = "INTERNAL"


class DeadlineExceeded(CronraftError):
    grpc_code = "DEADLINE_EXCEEDED"


class Unauthenticated(CronraftError):
    """The call carried no credentials, or ones the node does not accept (unknown, expired, badly signed
    token; a client certificate it cannot map to a principal). docs/security.md."""

    grpc_code = "UNAUTHENTICATED"


class PermissionDenied(CronraftError):
    """The caller is known but lacks the role the method needs; the message names that role."""

    grpc_code = "PERMISSION_DENIED"


__all__ = [
    "ConfigError",
    "CronraftError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InternalError",
    "InvalidArgument",
    "NotFound",
    "NotLeader",
    "OutcomeUnknown",
    "PermissionDenied",
    "ResourceExhausted",
    "StaleToken",
    "StorageError",
    "Unauthenticated",
    "Unavailable",
]
