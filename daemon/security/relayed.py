"""A caller's identity carried by a relaying member (daemon.relay; docs/security.md, "Relayed calls").

A follower relays a worker's stream or a client's write to the leader over its own channel, which
authenticates as a member (the member token derived from the cluster secret, over the members' TLS). The
caller's identity rides beside it in metadata, in one of two forms, never as roles:

- `cronraft-relay-bearer`: the caller's own bearer token (token file or JWT), verified again by the
  leader exactly as if the caller had sent it itself (expiry, revocation, signature). The relay asserts
  nothing: it only carries a credential.
- `cronraft-relay-cert-bin`: the identity of the caller's client certificate, which only the follower's
  TLS handshake could verify. This is the one assertion a member makes; the leader maps it to roles
  through its own `auth.cert_roles`.

The leader honours these keys only on a call that authenticates as a member (`Authenticator`): anyone
else sending them is refused UNAUTHENTICATED. A member could already write anything into the Raft log
with the cluster secret, so trusting its assertion widens nothing.

`cronraft-relay-hop` names the relaying member. It grants nothing (anyone may send it): a node never
relays a call that carries it, so that two nodes with stale views of the leader cannot bounce a call
between them. `cronraft-relay-peer` is the caller's address as the relaying member saw it; the leader's
audit trail names it (with the member) on a call it honours as relayed, and ignores it on any other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cronraft.daemon.security.authz import Principal
from cronraft.errors import PermissionDenied, Unauthenticated

__all__ = [
    "RELAY_BEARER",
    "RELAY_CERT",
    "RELAY_HOP",
    "RELAY_PEER",
    "RelayedCredential",
    "identity_metadata",
    "relayed_credential",
    "relayed_hop",
    "relayed_via",
]

RELAY_BEARER = "cronraft-relay-bearer"
RELAY_CERT = "cronraft-relay-cert-bin"  # binary metadata: an identity is UTF-8, not always ASCII
RELAY_HOP = "cronraft-relay-hop"
RELAY_PEER = "cronraft-relay-peer"
MAX_PEER_CHARS = 256  # a peer address ("ipv6:[...]:port" and the like); longer ones are cut
MAX_RELAYED_CHARS = 8192  # a bearer token or an identity (the nodes refuse longer tokens anyway)

# (kind, value): ("bearer", token) or ("cert", identity).
RelayedCredential = tuple[str, str]


def _values(metadata: Iterable[tuple[str, Any]] | None, key: str) -> list[Any]:
    return [value for k, value in metadata or () if k == key]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def relayed_credential(metadata: Iterable[tuple[str, Any]] | None) -> RelayedCredential | None:
    """The caller's credential a relaying member put in the call's metadata, None if there is none;
    Unauthenticated if the keys are malformed (both forms, a key twice, empty or too long)."""
    bearers, certs = _values(metadata, RELAY_BEARER), _values(metadata, RELAY_CERT)
    if not bearers and not certs:
        return None
    if len(bearers) + len(certs) > 1:
        raise Unauthenticated(f"a relayed call carries exactly one of {RELAY_BEARER} and {RELAY_CERT}")
    kind, value = ("bearer", _text(bearers[0])) if bearers else ("cert", _text(certs[0]))
    if not value.strip() or len(value) > MAX_RELAYED_CHARS:
        raise Unauthenticated(f"the relayed {kind} credential is empty or longer than {MAX_RELAYED_CHARS}")
    return kind, value.strip() if kind == "bearer" else value


def relayed_hop(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The member that relayed this call (None: it came straight from its caller)."""
    hops = _values(metadata, RELAY_HOP)
    return _text(hops[0]) if hops else None


def relayed_via(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """Where a relayed call came from, for the audit trail: "<caller's peer> via <member>" ("" if the
    call carries no hop). Call it only for a call honoured as relayed: the keys are the member's word."""
    hop = relayed_hop(metadata)
    if hop is None:
        return ""
    peers = _values(metadata, RELAY_PEER)
    peer = _text(peers[0])[:MAX_PEER_CHARS] if peers else "unknown"
    return f"{peer} via {hop[:MAX_PEER_CHARS]}"


def _caller_bearer(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    for value in _values(metadata, "authorization"):
        scheme, _, token = _text(value).partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def identity_metadata(
    principal: Principal, metadata: Iterable[tuple[str, Any]] | None, hop: str, peer: str = ""
) -> list[tuple[str, str | bytes]]:
    """What a relaying member adds to the call it makes for `principal` (the caller it authenticated;
    `metadata`: the caller's own call metadata; `peer`: the caller's address): the hop and the peer, and
    the caller's credential as above. With authentication off (`source` "none") only the hop and the
    peer: the leader has no one to check either."""
    out: list[tuple[str, str | bytes]] = [(RELAY_HOP, hop)]
    if peer:
        out.append((RELAY_PEER, peer[:MAX_PEER_CHARS]))
    if principal.source == "none":
        return out
    if principal.source in ("token", "jwt"):
        token = _caller_bearer(metadata)
        if token is None:  # authenticated by a token it did not send: cannot happen, refuse anyway
            raise Unauthenticated("relay: the caller's bearer token is missing from its call")
        out.append((RELAY_BEARER, token))
    elif principal.source == "cert":
        out.append((RELAY_CERT, principal.name.encode("utf-8")))
    else:  # a member's own call (its clock probe): nothing it may call is ever relayed
        raise PermissionDenied(f"relay: a call by a {principal.source} principal is not relayed")
    return out
