"""HTTP payloads: the request a worker makes for a lease whose payload is `http` (docs/payloads.md).

`run_http` is `InProcessWork` for `_inprocess_runner.InProcessRunner`: the runner owns the timeout (the
lease's `timeout_ms` bounds the whole request: DNS, connect, TLS, sending, reading the response) and stops
(cancel, revoke, self-fence, shutdown), which abort the request by shutting its socket down.

The request is made with the standard library (`http.client`) in a daemon thread of its own
(`_inprocess_runner.call_in_thread`). No redirect is followed; TLS certificates are always verified. Success
is a status among `expected_status` (default: any 2xx). The attempt's `exit_code` is the HTTP status whenever
a response arrived (also on success), `NO_EXIT_CODE` (-1) when none did (connection refused, DNS, TLS, a
malformed response), and 126 when the payload itself cannot be sent (bad URL, method or header).

Output: the response body streams to stdout (its tail is the result's `stdout_tail`); a curl-like
summary of the exchange (request line and headers, then status line and headers) goes to stderr, with
credentials (Authorization, Cookie, ...) redacted.

With a worker policy (`_policy.WorkerPolicy`): header values `secret:NAME` are resolved on the worker
(and shown redacted in the summary), and the host is resolved once, each address checked against the
policy's egress rules (loopback, link-local, private and metadata addresses refused unless allowed), and
the connection made to a checked address, with the URL's name kept for the Host header and TLS (SNI and
certificate check): a name that resolves differently on the second lookup cannot slip past the check. A
refusal ends the attempt ATTEMPT_REFUSED (final: the execution fails with the reason).

The attempt's identity travels as request headers (they override the payload's own of the same name):
`Cronraft-Execution-Id` (the idempotency key), `Cronraft-Task-Id`, `Cronraft-Attempt`,
`Cronraft-Nominal-Time` (RFC 3339, UTC) and `Cronraft-Fencing-Token` (`term.index`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http
import http.client
import re
import socket
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from cronraft.client._inprocess_runner import InProcessIO, WorkOutcome, call_in_thread
from cronraft.client._policy import PolicyRefusal, WorkerPolicy
from cronraft.client._runner import NO_EXIT_CODE, format_token, rfc3339_utc
from cronraft.proto.v1 import common_pb2, worker_pb2

CANNOT_SEND_EXIT_CODE = 126
USER_AGENT = "cronraft-worker"
_READ_SIZE = 64 * 1024
# Beyond the lease timeout, how long the thread's own socket timeout lets an abandoned request linger.
# The runner's timeout is the one that decides the outcome; this only bounds the thread.
_SOCKET_TIMEOUT_SLACK_S = 1.0
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 token: methods, header names
_REDACTED = {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}


@dataclass(frozen=True)
class HttpRequest:
    """A validated request, ready to send."""

    method: str
    https: bool
    host: str
    port: int | None
    target: str  # path and query
    headers: tuple[tuple[str, str], ...]
    body: bytes
    url: str  # for messages: the URL without its password
    secret_headers: frozenset[str] = frozenset()  # lower-case names whose values came from secrets


def identity_headers(lease: worker_pb2.Lease) -> dict[str, str]:
    return {
        "Cronraft-Execution-Id": lease.execution_id,  # the idempotency key
        "Cronraft-Task-Id": lease.task_id,
        "Cronraft-Attempt": str(lease.attempt),
        "Cronraft-Nominal-Time": rfc3339_utc(lease.nominal_time_ms),
        "Cronraft-Fencing-Token": format_token(lease.token),
    }


def build_request(lease: worker_pb2.Lease, policy: WorkerPolicy | None = None) -> HttpRequest | str:
    """The request of `lease`'s http payload, or an error text naming the field to fix. PolicyRefusal
    when a `secret:NAME` header value cannot be resolved."""
    payload = lease.payload.http
    method = (payload.method or "GET").upper()
    if not _TOKEN.match(method):
        return f"payload.http.method: {payload.method!r} is not an HTTP method"
    try:
        parts = urlsplit(payload.url)
        port = parts.port
    except ValueError as exc:
        return f"payload.http.url: {payload.url!r} is not a valid URL ({exc})"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return f"payload.http.url: only http:// and https:// URLs are supported, got {payload.url!r}"
    if not parts.hostname:
        return f"payload.http.url: {payload.url!r} has no host"
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc += f":{port}" if port is not None else ""
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not target.isascii() or any(c.isspace() or ord(c) < 0x20 for c in target):
        return f"payload.http.url: {payload.url!r}: percent-encode spaces and non-ASCII characters"
    headers: dict[str, str] = {}
    if parts.username is not None:  # user:password@host: HTTP basic authentication
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    secret_headers: set[str] = set()
    for name, given in payload.headers.items():
        value = given if policy is None else policy.resolve_value(given, f"payload.http.headers[{name!r}]")
        if value != given:
            secret_headers.add(name.lower())
        headers[name] = value
    # Ours win over the payload's, matched without regard to case.
    ours = identity_headers(lease)
    headers = {k: v for k, v in headers.items() if k.lower() not in {o.lower() for o in ours}}
    headers.update(ours)
    if not any(k.lower() == "user-agent" for k in headers):
        headers["User-Agent"] = USER_AGENT
    for name, value in headers.items():
        if not _TOKEN.match(name):
            return f"payload.http.headers: {name!r} is not a valid header name"
        if any(c in value for c in "\r\n\0"):
            return f"payload.http.headers[{name!r}]: a value must not contain CR, LF or NUL"
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            return f"payload.http.headers[{name!r}]: the value must be ISO-8859-1 text"
    return HttpRequest(
        method=method,
        https=scheme == "https",
        host=parts.hostname,
        port=port,
        target=target,
        headers=tuple(headers.items()),
        body=payload.body,
        url=f"{scheme}://{netloc}{target}",
        secret_headers=frozenset(secret_headers),
    )


def expected_text(expected: list[int]) -> str:
    return ", ".join(str(s) for s in expected) if expected else "2xx"


def status_ok(status: int, expected: list[int]) -> bool:
    return status in expected if expected else 200 <= status < 300


def _header_lines(
    prefix: str,
    headers: list[tuple[str, str]] | tuple[tuple[str, str], ...],
    secret: frozenset[str] = frozenset(),
) -> str:
    return "".join(
        f"{prefix} {name}: {'<redacted>' if name.lower() in _REDACTED or name.lower() in secret else value}\n"
        for name, value in headers
    )


def request_summary(request: HttpRequest) -> str:
    text = f"> {request.method} {request.url} HTTP/1.1\n"
    text += _header_lines(">", request.headers, request.secret_headers)
    if request.body:
        text += f"> ({len(request.body)} bytes of body)\n"
    return text + "\n"


@dataclass(frozen=True)
class _Response:
    status: int
    reason: str


class EgressRefused(Exception):
    """The policy refuses every address the URL's host resolved to."""


def checked_addresses(host: str, port: int, policy: WorkerPolicy) -> list[tuple[Any, ...]]:
    """The socket addresses `host` resolves to (one lookup) that `policy` allows; EgressRefused naming
    the first refused one when none is allowed."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    allowed, refusals = [], []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        why = policy.egress_refusal(str(sockaddr[0]))
        if why is None:
            allowed.append(sockaddr)
        else:
            refusals.append(why)
    if not allowed:
        reason = refusals[0] if refusals else "no IPv4 or IPv6 address"
        raise EgressRefused(f"payload.http.url: host {host!r}: {reason}")
    return allowed


def _connector(addresses: list[tuple[Any, ...]]) -> Any:
    """A replacement for http.client's `socket.create_connection` that connects to the checked
    addresses only (in order), whatever (host, port) it is given."""

    def create(_address: object, timeout: object = None, source_address: object = None) -> socket.socket:
        error: OSError | None = None
        for sockaddr in addresses:
            try:
                return socket.create_connection(sockaddr[:2], timeout, source_address)  # type: ignore[arg-type]
            except OSError as exc:
                error = exc
        assert error is not None
        raise error

    return create


class _Exchange:
    """One request/response, run in a thread; `abort()` (from any thread) makes it fail promptly."""

    def __init__(
        self,
        request: HttpRequest,
        io: InProcessIO,
        timeout_s: float | None,
        policy: WorkerPolicy | None = None,
    ) -> None:
        self._request = request
        self._policy = policy
        self._io = io
        self._timeout_s = timeout_s + _SOCKET_TIMEOUT_SLACK_S if timeout_s is not None else None
        self._conn: http.client.HTTPConnection | None = None
        self._aborted = False

    def abort(self) -> None:
        # Flag first, then look for the socket; the thread sets the socket, then checks the flag: one of
        # the two sees the other, so a request is never sent after an abort.
        self._aborted = True
        conn = self._conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            # The base class's shutdown: SSLSocket.shutdown would also drop its TLS state under the
            # reading thread's feet. Shutting down (not closing) wakes a thread blocked in recv().
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def _check(self) -> None:
        if self._aborted:
            raise ConnectionAbortedError("request aborted")

    def perform(self) -> _Response:
        request = self._request
        conn: http.client.HTTPConnection
        if request.https:
            conn = http.client.HTTPSConnection(
                request.host, request.port, timeout=self._timeout_s, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(request.host, request.port, timeout=self._timeout_s)
        if self._policy is not None:
            port = request.port or (443 if request.https else 80)
            addresses = checked_addresses(request.host, port, self._policy)
            # The URL's name stays the connection's host: the Host header and TLS (SNI, certificate).
            conn._create_connection = _connector(addresses)  # type: ignore[attr-defined]
        self._conn = conn
        try:
            self._check()
            conn.connect()
            self._check()
            conn.request(
                request.method, request.target, body=request.body or None, headers=dict(request.headers)
            )
            response = conn.getresponse()
            self._check()
            version = "HTTP/1.0" if response.version == 10 else "HTTP/1.1"
            summary = f"< {version} {response.status} {response.reason}\n"
            summary += _header_lines("<", response.getheaders())
            self._io.write_threadsafe(worker_pb2.STDERR, summary.encode("utf-8", "replace"))
            while data := response.read1(_READ_SIZE):
                self._io.write_threadsafe(worker_pb2.STDOUT, data)
                self._check()
            return _Response(response.status, response.reason)
        finally:
            conn.close()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def run_http(
    lease: worker_pb2.Lease, io: InProcessIO, policy: WorkerPolicy | None = None
) -> WorkOutcome:
    """Make the request of `lease`; the runner bounds and stops it (see the module docstring)."""
    try:
        request = build_request(lease, policy)
    except PolicyRefusal as exc:
        return WorkOutcome(common_pb2.ATTEMPT_REFUSED, exit_code=NO_EXIT_CODE, error=str(exc))
    if isinstance(request, str):
        return WorkOutcome(common_pb2.ATTEMPT_FAILED, exit_code=CANNOT_SEND_EXIT_CODE, error=request)
    io.write(worker_pb2.STDERR, request_summary(request).encode("utf-8", "replace"))
    timeout_s = lease.timeout_ms / 1000 if lease.timeout_ms > 0 else None
    exchange = _Exchange(request, io, timeout_s, policy)
    try:
        response = await call_in_thread(exchange.perform, name=f"http {lease.execution_id}")
    except asyncio.CancelledError:
        exchange.abort()
        raise
    except EgressRefused as exc:
        return WorkOutcome(common_pb2.ATTEMPT_REFUSED, exit_code=NO_EXIT_CODE, error=str(exc))
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # OSError covers refused/reset connections, DNS (gaierror), TLS (SSLError) and socket timeouts.
        return WorkOutcome(
            common_pb2.ATTEMPT_FAILED,
            exit_code=NO_EXIT_CODE,
            error=f"HTTP request to {request.url} failed: {_describe(exc)}",
        )
    expected = list(lease.payload.http.expected_status)
    if status_ok(response.status, expected):
        return WorkOutcome(common_pb2.ATTEMPT_SUCCEEDED, exit_code=response.status)
    reason = response.reason
    if not reason:
        with contextlib.suppress(ValueError):
            reason = http.HTTPStatus(response.status).phrase
    status_line = f"HTTP {response.status} {reason}" if reason else f"HTTP {response.status}"
    return WorkOutcome(
        common_pb2.ATTEMPT_FAILED,
        exit_code=response.status,
        error=f"{status_line} (expected {expected_text(expected)})",
    )
