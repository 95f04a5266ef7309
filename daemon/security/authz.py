"""What a caller may do: the role each RPC needs, the roles a principal holds per namespace, and the
checks servicers make in the namespace a call acts in.

- `RPC_ROLES` is the one table method -> role (tests/unit/test_security.py holds it complete against the
  proto services). Roles nest: admin > operator > submitter > reader; `worker` (WorkerGateway) and `node`
  (the members' clock probe) stand apart.
- A `Principal` holds roles per namespace (`"*"`: every namespace); the interceptor
  (daemon.security.interceptor) puts it in a context variable that servicers read with
  `current_principal()`.
- Namespaces (docs/security.md, "Namespaces"): the interceptor admits a Scheduler call when the caller
  holds the method's role in *some* namespace; the servicer, which knows the namespace (the request's
  for a create or a list, the stored object's for a call by id), then checks the role there with
  `require_role` (`hide=`: NOT_FOUND, not PERMISSION_DENIED, for an object in a namespace the caller
  cannot read, so that its existence does not leak) or `require_all_namespaces`. A worker
  (WorkerGateway.Connect) may hold `worker` in some namespaces only: the leader then leases it only
  executions of those (`worker_namespaces`, docs/security.md "Workers"). Other services (Cluster, Audit)
  are cluster-wide: their role must be held in "*".
- With no `[auth]`, no interceptor is installed and every caller is `ANONYMOUS`, which holds every role
  (the loopback single node, as before). `daemon.config` refuses a non-loopback address in that state.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from dataclasses import dataclass, field

from cronraft.bounds import DEFAULT_NAMESPACE
from cronraft.errors import NotFound, PermissionDenied
from cronraft.tokenfile import ALL_NAMESPACES

__all__ = [
    "ANONYMOUS",
    "NODE_ROLE",
    "PUBLIC",
    "RPC_ROLES",
    "Principal",
    "current_principal",
    "namespaced",
    "readable",
    "require_all_namespaces",
    "require_role",
    "role_satisfies",
    "worker_namespaces",
]

NODE_ROLE = "node"  # held only by the members themselves (the clock probe)
PUBLIC = None  # a method anyone may call, authenticated or not

_S = "/cronraft.v1.Scheduler/"
# Methods whose role the interceptor accepts held in any one namespace: the servicer checks the
# namespace the call acts in (every Scheduler method; reflection only describes the schema).
_REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
_CONNECT = "/cronraft.v1.WorkerGateway/Connect"
# The one table method -> role. Keep every RPC of the proto services here (a test checks it).
RPC_ROLES: dict[str, str | None] = {
    # reader: look, never change
    _S + "GetTask": "reader",
    _S + "ListTasks": "reader",
    _S + "ListExecutions": "reader",
    _S + "GetExecution": "reader",
    _S + "GetExecutionLogs": "reader",
    _S + "GetExecutionResult": "reader",  # as its logs: reader in its task's namespace
    _S + "GetTaskStats": "reader",
    _S + "GetClusterStats": "reader",  # in "*": its rankings name tasks of every namespace
    _S + "ExplainTask": "reader",
    _S + "PreviewTask": "reader",
    _S + "GetCalendar": "reader",
    _S + "ListCalendars": "reader",
    _S + "ListDeadLetters": "reader",
    _S + "GetDeadLetter": "reader",
    # submitter: create and steer tasks
    _S + "CreateTask": "submitter",
    _S + "ImportTasks": "submitter",
    _S + "UpdateTask": "submitter",
    _S + "PauseTask": "submitter",
    _S + "ResumeTask": "submitter",
    _S + "TriggerTask": "submitter",
    _S + "BackfillTask": "submitter",
    _S + "CancelTask": "submitter",
    _S + "CancelExecution": "submitter",
    # operator: destructive and shared things
    _S + "DeleteTask": "operator",
    _S + "PutCalendar": "operator",
    _S + "DeleteCalendar": "operator",
    _S + "RedriveDeadLetters": "operator",
    _S + "PurgeDeadLetters": "operator",
    # admin: the cluster itself
    "/cronraft.v1.Cluster/Status": "admin",
    "/cronraft.v1.Audit/ListAudit": "admin",  # the audit trail (daemon.services.audit)
    "/cronraft.v1.Cluster/AddNode": "admin",  # membership changes (daemon.services.cluster)
    "/cronraft.v1.Cluster/RemoveNode": "admin",
    "/cronraft.v1.Cluster/Backup": "admin",  # the whole store, every namespace (daemon.backup)
    # the members' clock probe (daemon.clockprobe), with the token derived from the cluster secret
    "/cronraft.v1.Cluster/Clock": NODE_ROLE,
    # workers
    _CONNECT: "worker",  # in some namespace: the leader leases it only those (worker_namespaces)
    # load balancers and orchestrators probe health without credentials; reflection shows the schema
    "/grpc.health.v1.Health/Check": PUBLIC,
    "/grpc.health.v1.Health/Watch": PUBLIC,
    "/grpc.health.v1.Health/List": PUBLIC,
    _REFLECTION: "reader",
}


def namespaced(method: str) -> bool:
    """Whether `method` (a full gRPC method name) acts in namespaces that its servicer checks: its role
    may be held in any one namespace. A worker's stream (Connect) too: the leader leases a worker only
    executions of the namespaces where it holds `worker` (`worker_namespaces`)."""
    return method.startswith(_S) or method in (_REFLECTION, _CONNECT)


# What each role may do besides its own name (the nesting).
_IMPLIES: dict[str, frozenset[str]] = {
    "reader": frozenset({"reader"}),
    "submitter": frozenset({"submitter", "reader"}),
    "operator": frozenset({"operator", "submitter", "reader"}),
    "admin": frozenset({"admin", "operator", "submitter", "reader"}),
    "worker": frozenset({"worker"}),
    NODE_ROLE: frozenset({NODE_ROLE}),
}


def role_satisfies(held: str, needed: str) -> bool:
    return needed in _IMPLIES.get(held, frozenset())


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. `roles` maps a namespace to the roles held there; "*" is every
    namespace."""

    name: str
    roles: Mapping[str, frozenset[str]]
    source: str  # "token", "jwt", "cert", "node" or "none" (authentication off)
    expires_ms: int | None = field(default=None, compare=False)
    # Where a call a member relayed came from: "<the caller's peer> via <member>" (daemon.security.relayed),
    # "" for a direct call. The audit trail's peer.
    via: str = field(default="", compare=False)

    def has(self, needed: str, namespace: str = ALL_NAMESPACES) -> bool:
        """The role `needed` (or one above it) in `namespace` (a name, "" meaning the default one), held
        there or in "*". With `namespace` "*": held in "*" only (every namespace)."""
        held = self.roles.get(namespace or DEFAULT_NAMESPACE, frozenset()) | self.roles.get(
            ALL_NAMESPACES, frozenset()
        )
        return any(role_satisfies(r, needed) for r in held)

    def has_somewhere(self, needed: str) -> bool:
        """The role `needed` (or one above it) in at least one namespace."""
        return any(role_satisfies(r, needed) for held in self.roles.values() for r in held)

    def describe_roles(self) -> str:
        parts = [
            f"{', '.join(sorted(r))}" + ("" if ns == ALL_NAMESPACES else f" in {ns}")
            for ns, r in sorted(self.roles.items())
        ]
        return "; ".join(parts) or "none"


ANONYMOUS = Principal("anonymous", {ALL_NAMESPACES: frozenset(_IMPLIES)}, "none")
# The caller of the RPC being served: set by daemon.security.interceptor before the servicer runs.
_current: contextvars.ContextVar[Principal] = contextvars.ContextVar("cronraft_principal", default=ANONYMOUS)


def current_principal() -> Principal:
    """The caller of the RPC being served (ANONYMOUS when authentication is off)."""
    return _current.get()


def _method_role(method: str) -> str:
    role = RPC_ROLES[_S + method]
    assert role is not None
    return role


def worker_namespaces(principal: Principal) -> frozenset[str] | None:
    """The namespaces (stored form: "" is the default one) whose executions a worker connecting as
    `principal` may be leased: None for every namespace (`worker` held in "*", or authentication off),
    else those where it holds `worker`. The leader's pick honours it (daemon.leader.workers)."""
    if principal.has("worker", ALL_NAMESPACES):
        return None
    return frozenset(
        "" if namespace == DEFAULT_NAMESPACE else namespace
        for namespace, held in principal.roles.items()
        if any(role_satisfies(r, "worker") for r in held)
    )


def readable(namespace: str) -> bool:
    """Whether the caller may see objects of `namespace` (stored form: "" is the default one)."""
    return current_principal().has("reader", namespace)


def require_role(method: str, namespace: str, *, hide: str | None = None) -> None:
    """Before Scheduler `method` (its short name, e.g. "CancelTask") acts in `namespace` (stored form: ""
    is the default one): PermissionDenied unless the caller holds the method's role (RPC_ROLES) there.
    With `hide`, the call names a stored object: NotFound(hide) instead when the caller cannot even read
    that namespace, the answer it would get if the object did not exist."""
    principal = current_principal()
    if hide is not None and not principal.has("reader", namespace):
        raise NotFound(hide)
    needed = _method_role(method)
    if not principal.has(needed, namespace):
        raise PermissionDenied(
            f"{method} needs role {needed} (or one above it) in namespace {namespace or DEFAULT_NAMESPACE}; "
            f"{principal.name} has {principal.describe_roles()}"
        )


def require_all_namespaces(method: str) -> None:
    """Before Scheduler `method` acts across every namespace (a list with all_namespaces): its role
    must be held in "*"."""
    principal = current_principal()
    needed = _method_role(method)
    if not principal.has(needed, ALL_NAMESPACES):
        raise PermissionDenied(
            f'{method} over all namespaces needs role {needed} (or one above it) in namespace "*"; '
            f"{principal.name} has {principal.describe_roles()}"
        )
