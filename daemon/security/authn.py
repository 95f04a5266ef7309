"""Who may call a node, and over what: TLS server credentials, authentication (hashed bearer tokens,
signed JWTs, client-certificate identities, the members' own probe token) and the role each RPC needs,
checked in one server interceptor. docs/security.md is the operator's side of this module.

- `RPC_ROLES` is the one table method -> role (tests/unit/test_security.py holds it complete against the
  proto services). Roles nest: admin > operator > submitter > reader; `worker` (WorkerGateway) and `node`
  (the members' clock probe) stand apart.
- A `Principal` holds roles per namespace (`"*"`: every namespace); the interceptor puts it in a context
  variable that servicers read with `current_principal()`.
- Namespaces (docs/security.md, "Namespaces"): the interceptor admits a Scheduler call when the caller
  holds the method's role in *some* namespace; the servicer, which knows the namespace (the request's
  for a create or a list, the stored object's for a call by id), then checks the role there with
  `require_role` (`hide=`: NOT_FOUND, not PERMISSION_DENIED, for an object in a namespace the caller
  cannot read, so that its existence does not leak) or `require_all_namespaces`. Other services
  (Cluster, WorkerGateway) are cluster-wide: their role must be held in "*".
- With no `[auth]`, no interceptor is installed and every caller is `ANONYMOUS`, which holds every role
  (the loopback single node, as before). `daemon.config` refuses a non-loopback address in that state.
- The token file is re-read when it changes (checked at most once a second) and on SIGHUP; a file that
  no longer parses keeps the previous table in force and logs an error.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import contextvars
import hashlib
import hmac
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from cronraft.bounds import DEFAULT_NAMESPACE
from cronraft.daemon.config import AuthConfig, Config, TlsConfig
from cronraft.errors import ConfigError, NotFound, PermissionDenied, Unauthenticated
from cronraft.tokenfile import (
    ALL_NAMESPACES,
    TokenEntry,
    check_principal,
    check_roles,
    hash_token,
    read_token_file,
)

__all__ = [
    "ANONYMOUS",
    "NODE_ROLE",
    "RPC_ROLES",
    "AuthInterceptor",
    "Authenticator",
    "JwtVerifier",
    "Principal",
    "ServerSecurity",
    "TokenStore",
    "current_principal",
    "node_token",
    "readable",
    "require_all_namespaces",
    "require_role",
    "role_satisfies",
]

log = structlog.get_logger("cronraft.security")

NODE_ROLE = "node"  # held only by the members themselves (the clock probe)
PUBLIC = None  # a method anyone may call, authenticated or not
MAX_JWT_CHARS = 8192
MAX_BEARER_CHARS = 8192
MAX_PEM_BYTES = 1 << 20
MIN_HS256_KEY_BYTES = 32
JWT_LEEWAY_S = 30  # clock difference tolerated on exp and nbf
_NODE_TOKEN_PREFIX = "crn1_"

_S = "/cronraft.v1.Scheduler/"
# Methods whose role the interceptor accepts held in any one namespace: the servicer checks the
# namespace the call acts in (every Scheduler method; reflection only describes the schema).
_REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
# The one table method -> role. Keep every RPC of the proto services here (a test checks it).
RPC_ROLES: dict[str, str | None] = {
    # reader: look, never change
    _S + "GetTask": "reader",
    _S + "ListTasks": "reader",
    _S + "ListExecutions": "reader",
    _S + "GetExecution": "reader",
    _S + "GetExecutionLogs": "reader",
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
    "/cronraft.v1.Audit/ListAudit": "admin",  # the audit trail (daemon.audit_api)
    # the members' clock probe (daemon.clockprobe), with the token derived from the cluster secret
    "/cronraft.v1.Cluster/Clock": NODE_ROLE,
    # workers
    "/cronraft.v1.WorkerGateway/Connect": "worker",
    # load balancers and orchestrators probe health without credentials; reflection shows the schema
    "/grpc.health.v1.Health/Check": PUBLIC,
    "/grpc.health.v1.Health/Watch": PUBLIC,
    "/grpc.health.v1.Health/List": PUBLIC,
    _REFLECTION: "reader",
}


def namespaced(method: str) -> bool:
    """Whether `method` (a full gRPC method name) acts in a namespace that its servicer checks."""
    return method.startswith(_S) or method == _REFLECTION


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
_current: contextvars.ContextVar[Principal] = contextvars.ContextVar("cronraft_principal", default=ANONYMOUS)


def current_principal() -> Principal:
    """The caller of the RPC being served (ANONYMOUS when authentication is off)."""
    return _current.get()


def _method_role(method: str) -> str:
    role = RPC_ROLES[_S + method]
    assert role is not None
    return role


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


def node_token(secret: str) -> str:
    """The bearer token members present to each other (the clock probe): derived from the cluster
    secret, so that it needs no distribution of its own and changes with the secret."""
    mac = hmac.new(secret.encode("utf-8"), b"cronraft node probe v1", hashlib.sha256).hexdigest()
    return _NODE_TOKEN_PREFIX + mac


def _read_bounded(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PEM_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{what}: cannot read {path}: {e.strerror or e}") from None
    if len(data) > MAX_PEM_BYTES:
        raise ConfigError(f"{what}: {path} is larger than {MAX_PEM_BYTES} bytes")
    if not data.strip():
        raise ConfigError(f"{what}: {path} is empty")
    return data


# ------------------------------------------------------------------------------------------ tokens


class TokenStore:
    """The token file's entries by hash, re-read when the file changes (at most once per `check_s`)."""

    def __init__(self, path: Path, *, check_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.path = path
        self._check_s = check_s
        self._clock = clock
        self._entries = read_token_file(path)  # ConfigError at start: the node refuses to start
        self._stamp = self._file_stamp()
        self._next_check = clock() + check_s
        if len(self._entries) == 0:
            log.warning("token file holds no token: no token will be accepted", path=str(path))

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def reload(self, *, reason: str = "signal") -> bool:
        """Re-read the file; on error keep the current table (and say so). True if it was replaced."""
        self._stamp = self._file_stamp()
        try:
            entries = read_token_file(self.path)
        except ConfigError as e:
            log.error("token file not reloaded: the previous tokens stay in force", problem=str(e))
            return False
        self._entries = entries
        log.info("token file reloaded", path=str(self.path), tokens=len(entries), reason=reason)
        return True

    def _maybe_reload(self) -> None:
        now = self._clock()
        if now < self._next_check:
            return
        self._next_check = now + self._check_s
        if self._file_stamp() != self._stamp:
            self.reload(reason="changed")

    def lookup(self, token: str) -> TokenEntry | None:
        self._maybe_reload()
        return self._entries.get(hash_token(token))


# -------------------------------------------------------------------------------------------- JWT


def _b64url(part: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise Unauthenticated(f"the JWT's {what} is not base64url") from None


class JwtVerifier:
    """Verifies compact JWS tokens signed with the one configured algorithm (HS256 or EdDSA/Ed25519).
    The algorithm is pinned by the config, never taken from the token's header (no "none", no
    confusion of a public key with an HMAC key). Claims: `sub` (the principal), `roles` (a list, or a
    table namespace -> list), `exp` (required), `nbf`, `iss` and `aud` when configured."""

    def __init__(self, auth: AuthConfig, *, wall: Callable[[], float] = time.time) -> None:
        assert auth.jwt_key_file is not None
        self.algorithm = auth.jwt_algorithm
        self.issuer = auth.jwt_issuer
        self.audience = auth.jwt_audience
        self._wall = wall
        raw = _read_bounded(auth.jwt_key_file, "auth.jwt_key_file")
        self._hmac_key: bytes | None = None
        self._public: Ed25519PublicKey | None = None
        if self.algorithm == "HS256":
            key = raw.strip()
            if len(key) < MIN_HS256_KEY_BYTES:
                raise ConfigError(
                    f"auth.jwt_key_file: {auth.jwt_key_file} holds {len(key)} bytes; an HS256 key needs at "
                    f"least {MIN_HS256_KEY_BYTES} random bytes"
                )
            self._hmac_key = key
        else:
            try:
                public = load_pem_public_key(raw)
            except ValueError as e:
                raise ConfigError(
                    f"auth.jwt_key_file: {auth.jwt_key_file}: not a PEM public key: {e}"
                ) from None
            if not isinstance(public, Ed25519PublicKey):
                raise ConfigError(
                    f"auth.jwt_key_file: {auth.jwt_key_file}: jwt_algorithm EdDSA needs an Ed25519 public key"
                )
            self._public = public

    def verify(self, token: str) -> Principal:
        if len(token) > MAX_JWT_CHARS:
            raise Unauthenticated(f"the JWT is longer than {MAX_JWT_CHARS} characters")
        parts = token.split(".")
        if len(parts) != 3:
            raise Unauthenticated("not a JWT (expected header.payload.signature)")
        try:
            header = json.loads(_b64url(parts[0], "header"))
            claims = json.loads(_b64url(parts[1], "payload"))
        except (ValueError, UnicodeDecodeError):
            raise Unauthenticated("the JWT's header or payload is not JSON") from None
        if not isinstance(header, dict) or header.get("alg") != self.algorithm:
            alg = header.get("alg") if isinstance(header, dict) else None
            raise Unauthenticated(f"the JWT's alg {alg!r} is not the configured {self.algorithm}")
        signed = f"{parts[0]}.{parts[1]}".encode("ascii", "replace")
        signature = _b64url(parts[2], "signature")
        if self._hmac_key is not None:
            expected = hmac.new(self._hmac_key, signed, hashlib.sha256).digest()
            if not hmac.compare_digest(expected, signature):
                raise Unauthenticated("the JWT's signature does not verify")
        else:
            assert self._public is not None
            try:
                self._public.verify(signature, signed)
            except InvalidSignature:
                raise Unauthenticated("the JWT's signature does not verify") from None
        return self._principal(claims)

    def _principal(self, claims: Any) -> Principal:
        if not isinstance(claims, dict):
            raise Unauthenticated("the JWT's payload is not a JSON object")
        now = self._wall()
        exp = claims.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise Unauthenticated("the JWT has no exp claim (tokens without expiry are refused)")
        if now > exp + JWT_LEEWAY_S:
            raise Unauthenticated(
                f"the JWT expired at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(exp))}"
            )
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and not isinstance(nbf, bool) and now + JWT_LEEWAY_S < nbf:
            raise Unauthenticated("the JWT is not valid yet (nbf)")
        if self.issuer and claims.get("iss") != self.issuer:
            raise Unauthenticated(f"the JWT's iss is not {self.issuer!r}")
        if self.audience:
            aud = claims.get("aud")
            auds = aud if isinstance(aud, list) else [aud]
            if self.audience not in auds:
                raise Unauthenticated(f"the JWT's aud does not include {self.audience!r}")
        try:
            name = check_principal(str(claims.get("sub", "")), "sub")
            roles = check_roles(claims.get("roles"), "roles")
        except Exception as e:  # InvalidArgument naming the claim
            raise Unauthenticated(f"the JWT's claims: {e}") from None
        return Principal(name, roles, "jwt", expires_ms=int(exp * 1000))


# ---------------------------------------------------------------------------------- authentication


def _bearer(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
            if len(text) > MAX_BEARER_CHARS + 7:
                raise Unauthenticated(
                    f"the authorization header is longer than {MAX_BEARER_CHARS} characters"
                )
            scheme, _, token = text.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("the authorization header is not `Bearer <token>`")
            return token.strip()
    return None


class Authenticator:
    """Turns a call's credentials into a Principal, or raises Unauthenticated saying why."""

    def __init__(
        self,
        auth: AuthConfig,
        *,
        secret: str | None,
        tokens: TokenStore | None = None,
        jwt: JwtVerifier | None = None,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.tokens = tokens
        self.jwt = jwt
        self._node_token = node_token(secret) if secret else None
        self._node = Principal("cluster-member", {ALL_NAMESPACES: frozenset({NODE_ROLE})}, "node")
        self._cert_roles = {name: check_roles(list(roles), "cert_roles") for name, roles in auth.cert_roles}
        self._wall_ms = wall_ms

    def authenticate(
        self, metadata: Sequence[tuple[str, Any]] | None, auth_context: Mapping[str, Sequence[bytes]]
    ) -> Principal:
        token = _bearer(metadata)
        if token is not None:
            return self._from_token(token)
        identity = self._from_cert(auth_context)
        if identity is not None:
            return identity
        how = ["a bearer token (--token or CRONRAFT_TOKEN)"]
        if self._cert_roles:
            how.append("a client certificate whose identity auth.cert_roles lists")
        raise Unauthenticated(f"no credentials: send {' or '.join(how)}")

    def _from_token(self, token: str) -> Principal:
        if self._node_token is not None and token.startswith(_NODE_TOKEN_PREFIX):
            if hmac.compare_digest(token, self._node_token):
                return self._node
            raise Unauthenticated("the member token does not match this cluster's secret")
        if token.count(".") == 2 and self.jwt is not None:
            return self.jwt.verify(token)
        if self.tokens is not None:
            entry = self.tokens.lookup(token)
            if entry is not None:
                if entry.expires_ms is not None and self._wall_ms() >= entry.expires_ms:
                    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry.expires_ms / 1000))
                    raise Unauthenticated(f"the token of {entry.principal} expired at {when}")
                return Principal(entry.principal, entry.roles, "token", expires_ms=entry.expires_ms)
        raise Unauthenticated("the token is not known to this cluster (revoked, mistyped or for another one)")

    def _from_cert(self, auth_context: Mapping[str, Sequence[bytes]]) -> Principal | None:
        if not self._cert_roles:
            return None
        # Verified by the TLS handshake (config requires tls.require_client_cert with cert_roles).
        names = [
            *auth_context.get("x509_subject_alternative_name", ()),
            *auth_context.get("x509_common_name", ()),
        ]
        seen = []
        for raw in names:
            name = raw.decode("utf-8", "replace")
            seen.append(name)
            roles = self._cert_roles.get(name)
            if roles is not None:
                return Principal(name, roles, "cert")
        if seen:
            raise Unauthenticated(
                f"the client certificate ({', '.join(seen[:3])}) is not in auth.cert_roles; send a token"
            )
        return None


# ------------------------------------------------------------------------------------ interceptor


def _short(method: str) -> str:
    return method.rsplit("/", 1)[-1]


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every call and checks RPC_ROLES before the servicer runs; the servicer then finds
    the caller in `current_principal()`. A method missing from the table is refused (fail closed)."""

    def __init__(self, authenticator: Authenticator, table: Mapping[str, str | None] = RPC_ROLES) -> None:
        self.authenticator = authenticator
        self.table = table

    def check(
        self,
        method: str,
        metadata: Sequence[tuple[str, Any]] | None,
        auth_context: Mapping[str, Sequence[bytes]],
    ) -> Principal:
        if method not in self.table:
            raise PermissionDenied(f"{_short(method)}: not in the role table; refused")
        needed = self.table[method]
        assert needed is not None
        try:
            principal = self.authenticator.authenticate(metadata, auth_context)
        except Unauthenticated as e:
            raise Unauthenticated(f"{_short(method)} needs role {needed}: {e}") from None
        if namespaced(method):
            # The servicer checks the namespace it acts in (require_role); here, any namespace will do.
            if not principal.has_somewhere(needed):
                raise PermissionDenied(
                    f"{_short(method)} needs role {needed} (or one above it) in some namespace; "
                    f"{principal.name} has {principal.describe_roles()}"
                )
        elif not principal.has(needed):
            raise PermissionDenied(
                f'{_short(method)} needs role {needed} (or one above it) in every namespace ("*"); '
                f"{principal.name} has {principal.describe_roles()}"
            )
        return principal

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method = str(getattr(handler_call_details, "method", ""))
        if handler is None or (method in self.table and self.table[method] is PUBLIC):
            return handler
        metadata = handler_call_details.invocation_metadata
        return _guarded(handler, lambda context: self.check(method, metadata, context.auth_context()))


async def _refuse(context: grpc.aio.ServicerContext[Any, Any], e: Unauthenticated | PermissionDenied) -> None:
    code = (
        grpc.StatusCode.UNAUTHENTICATED
        if isinstance(e, Unauthenticated)
        else grpc.StatusCode.PERMISSION_DENIED
    )
    log.info("call refused", code=code.name, problem=str(e), peer=context.peer())
    await context.abort(code, str(e))


# How long a refused streaming call waits for the client's first message before its status is sent.
_FIRST_MESSAGE_WAIT_S = 2.0


def _guarded(handler: Any, check: Callable[[Any], Principal]) -> Any:
    """`handler` whose behaviour first runs `check(context)` and sets the principal for the servicer."""

    async def admit(context: Any) -> contextvars.Token[Principal] | None:
        try:
            return _current.set(check(context))
        except (Unauthenticated, PermissionDenied) as e:
            await _refuse(context, e)
            return None

    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            await admit(context)
            return await inner_uu(request, context)

        return handler._replace(unary_unary=unary_unary)

    async def admit_stream(requests: Any, context: Any) -> None:
        """`admit` for a call whose client streams: a refusal first takes the client's first message.
        Aborting before it arrives races the client's write, and grpc.aio's client then reports its
        failed write as INTERNAL "Internal error from Core" instead of our status (grpc/grpc#36066):
        a worker refused for its token would log a meaningless error."""
        try:
            _current.set(check(context))
        except (Unauthenticated, PermissionDenied) as e:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(anext(aiter(requests)), _FIRST_MESSAGE_WAIT_S)
            await _refuse(context, e)

    if handler.stream_unary is not None:
        inner_su = handler.stream_unary

        async def stream_unary(requests: Any, context: Any) -> Any:
            await admit_stream(requests, context)
            return await inner_su(requests, context)

        return handler._replace(stream_unary=stream_unary)
    if handler.unary_stream is not None:
        inner_us = handler.unary_stream

        async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            await admit(context)
            async for reply in _replies(inner_us(request, context)):
                yield reply

        return handler._replace(unary_stream=unary_stream)
    inner_ss = handler.stream_stream

    async def stream_stream(requests: Any, context: Any) -> AsyncIterator[Any]:
        await admit_stream(requests, context)
        async for reply in _replies(inner_ss(requests, context)):
            yield reply

    return handler._replace(stream_stream=stream_stream)


async def _replies(result: Any) -> AsyncIterator[Any]:
    """A streaming behaviour's replies, whether it is an async generator or a coroutine returning one."""
    if hasattr(result, "__aiter__"):
        async for reply in result:
            yield reply
    else:  # a coroutine: writes with context.write() and returns None
        await result


# ------------------------------------------------------------------------------------ the server side


class ServerSecurity:
    """What the node's gRPC server needs: its credentials (None: plaintext) and its interceptors."""

    def __init__(self, config: Config) -> None:
        self.config = config
        tls, auth = config.tls, config.auth
        self.credentials = _server_credentials(tls) if tls.enabled else None
        self.tokens = TokenStore(auth.token_file) if auth.token_file is not None else None
        jwt = JwtVerifier(auth) if auth.jwt_key_file is not None else None
        self.authenticator = (
            Authenticator(auth, secret=config.cluster.secret, tokens=self.tokens, jwt=jwt)
            if auth.enabled
            else None
        )
        # The probe's client side: peers' CA, this node's certificate when clients must present one.
        self.peer_ca = _read_bounded(tls.peer_ca, "tls.ca") if tls.enabled and tls.peer_ca else None
        if tls.enabled and config.peers and self.peer_ca is None:
            raise ConfigError(
                f"{config.source}: tls.ca: missing; set it to the CA that signed the members' certificates"
            )

    @property
    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [AuthInterceptor(self.authenticator)] if self.authenticator is not None else []

    def probe_token(self) -> str | None:
        """The token this node sends its peers, when they authenticate (they share this config's [auth])."""
        if self.authenticator is None or not self.config.cluster.secret:
            return None
        return node_token(self.config.cluster.secret)

    def probe_client_cert(self) -> tuple[bytes, bytes] | None:
        tls = self.config.tls
        if not (tls.enabled and tls.require_client_cert and tls.cert and tls.key):
            return None
        return _read_bounded(tls.cert, "tls.cert"), _read_bounded(tls.key, "tls.key")

    def reload(self) -> None:
        """SIGHUP: re-read what can be re-read in place (the token file)."""
        if self.tokens is not None:
            self.tokens.reload(reason="SIGHUP")

    def announce(self) -> None:
        """One line at start saying how this node is protected; a loud one when it is not."""
        c = self.config
        address = c.self_member.grpc_address
        if c.insecure and not (c.tls.enabled and c.auth.enabled):
            log.warning(
                "INSECURE: insecure = true in the config; this node serves gRPC without "
                + " and without ".join(
                    what
                    for what, on in (("TLS", c.tls.enabled), ("authentication", c.auth.enabled))
                    if not on
                )
                + "; whoever reaches it can run commands on the workers",
                grpc=address,
                config=c.source,
            )
        methods = [
            name
            for name, on in (
                ("token_file", c.auth.token_file is not None),
                ("jwt", c.auth.jwt_key_file is not None),
                ("client_cert", bool(c.auth.cert_roles)),
            )
            if on
        ]
        log.info(
            "transport security",
            grpc=address,
            tls=c.tls.enabled,
            client_cert_required=c.tls.require_client_cert,
            auth=methods or "off (every caller holds every role)",
        )


def _server_credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    assert tls.cert is not None and tls.key is not None
    cert = _read_bounded(tls.cert, "tls.cert")
    key = _read_bounded(tls.key, "tls.key")
    client_ca = _read_bounded(tls.client_ca, "tls.client_ca") if tls.client_ca is not None else None
    try:
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=client_ca, require_client_auth=tls.require_client_cert
        )
    except (ValueError, RuntimeError) as e:
        raise ConfigError(f"tls: cannot use the certificate {tls.cert} and key {tls.key}: {e}") from None
