"""[tls], [auth] and `insecure`: their shape is validated here (their files are read when the node starts,
in daemon.security), and a gRPC address others can reach is refused without TLS and authentication."""

from __future__ import annotations

from collections.abc import Mapping

from cronraft.daemon.config.addresses import is_loopback, split_host_port
from cronraft.daemon.config.model import AuthConfig, TlsConfig
from cronraft.daemon.config.reader import _describe, _path, _Table
from cronraft.errors import ConfigError, InvalidArgument
from cronraft.tokenfile import ALL_NAMESPACES, check_principal, check_roles

JWT_ALGORITHMS = ("HS256", "EdDSA")


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
        raise t.error(
            "cert_roles", 'expected a table: identity = ["role", ...] or { namespace = ["role", ...] }'
        )
    cert_roles: list[tuple[str, tuple[str, ...]]] = []
    for identity, roles in raw_roles.items():
        try:
            check_principal(identity, t.key(f"cert_roles.{identity}"))
            check_roles(roles, t.key(f"cert_roles.{identity}"))
        except InvalidArgument as e:
            raise ConfigError(f"{t.source}: {e}") from None
        cert_roles.append((identity, _role_texts(roles)))
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


def _role_texts(roles: list[str] | Mapping[str, list[str]]) -> tuple[str, ...]:
    """A cert_roles value (checked: a list of roles, for every namespace, or a table namespace -> list, as
    in the token file) as ROLE or ROLE@NAMESPACE texts (cronraft.tokenfile.parse_role)."""
    if isinstance(roles, list | tuple):
        return tuple(roles)
    return tuple(
        role if namespace == ALL_NAMESPACES else f"{role}@{namespace}"
        for namespace, names in roles.items()
        for role in names
    )


def _check_exposure(
    root: _Table, address: str, key: str, *, tls: TlsConfig, auth: AuthConfig, insecure: bool
) -> None:
    """An address others can reach (gRPC, or the HTTP listener at `key`) needs TLS and authentication,
    unless `insecure = true`."""
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
            key,
            f"{address!r} is not a loopback address and this node has no {' and no '.join(missing)}: "
            "anyone who reaches it could run commands on the workers. Configure them (docs/security.md, "
            "`schedctl tls init`, `schedctl token create`), or write `insecure = true` at the top of the "
            "file to serve it unprotected anyway",
        )
