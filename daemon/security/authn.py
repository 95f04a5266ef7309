"""Who is calling: a call's credentials (a bearer token from the token file, a signed JWT, the members'
probe token derived from the cluster secret, or a client certificate's identity) turned into a
`Principal` (daemon.security.authz), or Unauthenticated saying why. A call a member relays for a caller
(daemon.security.relayed) authenticates that caller, and only when the call itself is a member's.

The token file is re-read when it changes (checked at most once a second) and on SIGHUP; a file that no
longer parses keeps the previous table in force and logs an error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from cronraft.daemon.config import AuthConfig
from cronraft.daemon.security.authz import NODE_ROLE, Principal
from cronraft.daemon.security.relayed import RelayedCredential, relayed_credential, relayed_via
from cronraft.errors import ConfigError, Unauthenticated
from cronraft.tokenfile import (
    ALL_NAMESPACES,
    TokenEntry,
    check_principal,
    check_roles,
    hash_token,
    parse_role,
    read_token_file,
)

__all__ = ["Authenticator", "JwtVerifier", "TokenStore", "node_token"]

log = structlog.get_logger("cronraft.security")

MAX_JWT_CHARS = 8192
MAX_BEARER_CHARS = 8192
MAX_PEM_BYTES = 1 << 20
MIN_HS256_KEY_BYTES = 32
JWT_LEEWAY_S = 30  # clock difference tolerated on exp and nbf
_NODE_TOKEN_PREFIX = "crn1_"


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


def _cert_roles(texts: Sequence[str]) -> dict[str, frozenset[str]]:
    """A cert_roles entry's roles (ROLE or ROLE@NAMESPACE, daemon.config) as a table namespace -> roles."""
    table: dict[str, list[str]] = {}
    for text in texts:
        namespace, role = parse_role(text, "cert_roles")
        table.setdefault(namespace, []).append(role)
    return check_roles(table, "cert_roles")


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
        self._cert_roles = {name: _cert_roles(roles) for name, roles in auth.cert_roles}
        self._wall_ms = wall_ms

    def authenticate(
        self, metadata: Sequence[tuple[str, Any]] | None, auth_context: Mapping[str, Sequence[bytes]]
    ) -> Principal:
        token = _bearer(metadata)
        relayed = relayed_credential(metadata)
        if relayed is not None:
            return replace(self._relayed(token, relayed), via=relayed_via(metadata))
        if token is not None:
            return self._from_token(token)
        identity = self._from_cert(auth_context)
        if identity is not None:
            return identity
        how = ["a bearer token (--token or CRONRAFT_TOKEN)"]
        if self._cert_roles:
            how.append("a client certificate whose identity auth.cert_roles lists")
        raise Unauthenticated(f"no credentials: send {' or '.join(how)}")

    def _relayed(self, token: str | None, relayed: RelayedCredential) -> Principal:
        """The caller a member relays (daemon.security.relayed): honoured only when the call itself
        authenticates as a member; its credential is then checked here as if the caller had sent it,
        and a certificate identity gets this node's own `auth.cert_roles`, never roles from the relay."""
        member = (
            token is not None
            and self._node_token is not None
            and hmac.compare_digest(token.encode(), self._node_token.encode())
        )
        if not member:
            raise Unauthenticated("only a cluster member (its member token) may relay a caller's identity")
        kind, value = relayed
        if kind == "bearer":
            if value.startswith(_NODE_TOKEN_PREFIX):
                raise Unauthenticated("a member token is never relayed")
            return self._from_token(value)
        roles = self._cert_roles.get(value)
        if roles is None:
            raise Unauthenticated(f"the relayed client certificate ({value}) is not in auth.cert_roles")
        return Principal(value, roles, "cert")

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
