"""What the node's gRPC server needs from security: its TLS credentials, its interceptors, the token file
to reload on SIGHUP, and the client side of the members' clock probe (peers' CA, certificate, token)."""

from __future__ import annotations

import grpc
import structlog

from cronraft.daemon.config import Config, TlsConfig
from cronraft.daemon.security.authn import Authenticator, JwtVerifier, TokenStore, _read_bounded, node_token
from cronraft.daemon.security.interceptor import AuthInterceptor
from cronraft.errors import ConfigError

__all__ = ["ServerSecurity"]

log = structlog.get_logger("cronraft.security")


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
