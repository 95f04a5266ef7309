"""How every client reaches a node: plaintext or TLS (optionally with a client certificate), and the
bearer token sent with each call. The one place where channels are made (SDK sync and async, schedctl,
schedworker, the daemon's clock probe).

Settings come from flags (`--tls-ca`, `--tls-cert`, `--tls-key`, `--token`) or, when a flag is absent,
from the environment (`CRONRAFT_TLS_CA`, `CRONRAFT_TLS_CERT`, `CRONRAFT_TLS_KEY`, `CRONRAFT_TOKEN` or
`CRONRAFT_TOKEN_FILE`).
TLS is on as soon as a CA or a client certificate is given (a certificate without `--tls-ca` is checked
against the system's roots). A token rides as `authorization: Bearer <token>`: as call credentials on a
TLS channel, by an interceptor on a plaintext one (a loopback node with authentication but no TLS).
docs/security.md says how to set a cluster up.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]
from grpc import aio  # type: ignore[import-untyped, unused-ignore]

from cronraft.errors import InvalidArgument, Unavailable

__all__ = [
    "ENV_CA",
    "ENV_CERT",
    "ENV_KEY",
    "ENV_TOKEN",
    "ENV_TOKEN_FILE",
    "MAX_PEM_BYTES",
    "MAX_TOKEN_CHARS",
    "TLS_HINT",
    "Transport",
    "add_transport_arguments",
    "transport_from_args",
    "with_tls_hint",
]

ENV_CA = "CRONRAFT_TLS_CA"
ENV_CERT = "CRONRAFT_TLS_CERT"
ENV_KEY = "CRONRAFT_TLS_KEY"
ENV_TOKEN = "CRONRAFT_TOKEN"
ENV_TOKEN_FILE = "CRONRAFT_TOKEN_FILE"  # a file holding the token (a mounted secret), read once
MAX_PEM_BYTES = 1 << 20  # a CA bundle, a certificate chain or a key, at most
MAX_TOKEN_CHARS = 8192  # an opaque token or a JWT (the nodes refuse longer ones too)
AUTH_METADATA_KEY = "authorization"


def _read_pem(path: str, field_name: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PEM_BYTES + 1)
    except OSError as e:
        raise InvalidArgument(field_name, f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > MAX_PEM_BYTES:
        raise InvalidArgument(field_name, f"{path} is larger than {MAX_PEM_BYTES} bytes: not a PEM file")
    if b"-----BEGIN " not in data:
        raise InvalidArgument(field_name, f"{path} is not a PEM file (no -----BEGIN line)")
    return data


def _read_token_file(path: str, field_name: str) -> str:
    """The token kept in a file (a mounted secret, so that it is in no process's environment)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TOKEN_CHARS + 2)
    except OSError as e:
        raise InvalidArgument(field_name, f"cannot read {path}: {e.strerror or e}") from None
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise InvalidArgument(field_name, f"{path} does not hold a token (not ASCII)") from None
    if not text:
        raise InvalidArgument(field_name, f"{path} is empty")
    return _check_token(text, field_name)


def _check_token(token: str, field_name: str) -> str:
    token = token.strip()
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidArgument(field_name, f"longer than {MAX_TOKEN_CHARS} characters")
    if not token.isascii() or not token.isprintable() or " " in token:
        raise InvalidArgument(field_name, "a token is printable ASCII without spaces")
    return token


@dataclass(frozen=True)
class Transport:
    """TLS material (PEM bytes, read once) and the bearer token; the empty Transport is plaintext."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return self.ca is not None or self.cert is not None

    @classmethod
    def from_settings(
        cls,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        token: str | None = None,
        *,
        names: tuple[str, str, str, str] = ("--tls-ca", "--tls-cert", "--tls-key", "--token"),
    ) -> Transport:
        """From file paths and a token; `names` name the fields in errors (flags or variables)."""
        if bool(cert) != bool(key):
            given, missing = (names[1], names[2]) if cert else (names[2], names[1])
            raise InvalidArgument(missing, f"{given} needs {missing} too (a certificate and its key)")
        return cls(
            ca=_read_pem(ca, names[0]) if ca else None,
            cert=_read_pem(cert, names[1]) if cert else None,
            key=_read_pem(key, names[2]) if key else None,
            token=_check_token(token, names[3]) or None if token else None,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Transport:
        env = os.environ if environ is None else environ
        return cls.from_settings(
            env.get(ENV_CA) or None,
            env.get(ENV_CERT) or None,
            env.get(ENV_KEY) or None,
            env.get(ENV_TOKEN) or _token_from_file_env(env),
            names=(ENV_CA, ENV_CERT, ENV_KEY, ENV_TOKEN if env.get(ENV_TOKEN) else ENV_TOKEN_FILE),
        )

    # ------------------------------------------------------------------------------------- channels

    def _credentials(self) -> Any:
        creds = grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )
        if self.token:
            creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(self.token))
        return creds

    def channel(self, address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
        """A synchronous channel to `address`."""
        if self.tls:
            return grpc.secure_channel(address, self._credentials(), options=list(options))
        ch = grpc.insecure_channel(address, options=list(options))
        if self.token:
            return grpc.intercept_channel(ch, _SyncBearer(self.token))
        return ch

    def aio_channel(self, address: str, options: Sequence[tuple[str, Any]] = ()) -> aio.Channel:
        """An asyncio channel to `address` (create it inside the running loop)."""
        if self.tls:
            return aio.secure_channel(address, self._credentials(), options=list(options))
        interceptors = [_AioBearer(self.token)] if self.token else None
        return aio.insecure_channel(address, options=list(options), interceptors=interceptors)


# ------------------------------------------------------------------------- bearer on plaintext channels


def _with_token(metadata: Any, token: str) -> tuple[tuple[str, str | bytes], ...]:
    return (*tuple(metadata or ()), (AUTH_METADATA_KEY, f"Bearer {token}"))


class _Details(grpc.ClientCallDetails):
    def __init__(self, base: Any, metadata: tuple[tuple[str, str | bytes], ...]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


class _SyncBearer(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, token: str) -> None:
        self._token = token

    def _details(self, details: Any) -> _Details:
        return _Details(details, _with_token(details.metadata, self._token))

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


class _AioBearer(
    aio.UnaryUnaryClientInterceptor,
    aio.UnaryStreamClientInterceptor,
    aio.StreamUnaryClientInterceptor,
    aio.StreamStreamClientInterceptor,
):
    def __init__(self, token: str) -> None:
        self._token = token

    def _details(self, d: Any) -> Any:
        metadata = aio.Metadata(*_with_token(d.metadata, self._token))
        return aio.ClientCallDetails(d.method, d.timeout, metadata, d.credentials, d.wait_for_ready)

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


# ------------------------------------------------------------------------------------------ the hint

# What gRPC says when a plaintext channel reaches a TLS listener: the node reads the HTTP/2 preface as
# a bad TLS record and closes the connection ("... ipv4:127.0.0.1:50051: Socket closed"). A node that is
# down says "Connection refused" instead, and gets no hint.
_TLS_REFUSAL_SIGNS = ("Socket closed", "Connection reset by peer")
TLS_HINT = f"the server may require TLS: set --tls-ca / {ENV_CA}"


def with_tls_hint(error: BaseException, transport: Transport) -> BaseException:
    """`error` with a hint appended when a plaintext channel failed the way a TLS listener makes it fail
    (UNAVAILABLE, "Socket closed"): the same type, the message first, then the hint. Anything else (a
    TLS channel, another failure) is returned as it is: the hint never stands in for the cause."""
    message = str(error)
    if (
        transport.tls
        or type(error) is not Unavailable
        or not any(sign in message for sign in _TLS_REFUSAL_SIGNS)
        or TLS_HINT in message
    ):
        return error
    return Unavailable(f"{message} ({TLS_HINT})")


# ------------------------------------------------------------------------------------------ the flags


_FLAG_HELP = (
    ("--tls-ca", f"CA bundle (PEM) that signed the nodes' certificates; turns TLS on (default: ${ENV_CA})"),
    ("--tls-cert", f"client certificate (PEM) for mutual TLS (default: ${ENV_CERT})"),
    ("--tls-key", f"the client certificate's private key (PEM) (default: ${ENV_KEY})"),
    (
        "--token",
        f"bearer token sent with every call (default: ${ENV_TOKEN}, else the file ${ENV_TOKEN_FILE} names)",
    ),
)


def add_transport_arguments(parser: Any, *, suppress: bool = False) -> list[argparse.Action]:
    """Add --tls-ca, --tls-cert, --tls-key, --token to `parser` (or an argument group); return them.
    With `suppress`, an absent flag leaves no attribute (options repeated on sub-commands,
    where the top-level value must stand)."""
    default = argparse.SUPPRESS if suppress else None
    return [
        parser.add_argument(
            flag, metavar="TOKEN" if flag == "--token" else "FILE", default=default, help=text
        )
        for flag, text in _FLAG_HELP
    ]


def _token_from_file_env(env: Mapping[str, str]) -> str | None:
    path = env.get(ENV_TOKEN_FILE)
    return _read_token_file(path, ENV_TOKEN_FILE) if path else None


def transport_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Transport:
    """The flags, each falling back to its environment variable; the token to $CRONRAFT_TOKEN, else to
    the file $CRONRAFT_TOKEN_FILE names (a mounted secret: the environment then holds no token). There is
    no --token-file flag: any second global flag starting `--to` would make argparse's prefix matching
    refuse `--to`, which `task explain` and `task backfill` take."""
    env = os.environ if environ is None else environ
    pairs = (("tls_ca", ENV_CA), ("tls_cert", ENV_CERT), ("tls_key", ENV_KEY), ("token", ENV_TOKEN))
    values = []
    names = []
    for attr, var in pairs:
        flag = getattr(args, attr, None)
        values.append(flag or env.get(var) or None)
        names.append(f"--{attr.replace('_', '-')}" if flag else var)
    if values[3] is None and env.get(ENV_TOKEN_FILE):
        values[3], names[3] = _token_from_file_env(env), ENV_TOKEN_FILE
    return Transport.from_settings(*values, names=(names[0], names[1], names[2], names[3]))
