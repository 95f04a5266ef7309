"""The I/O edge of notification delivery (`daemon.notify`): `Sender`, how a delivery attempt reaches
its target, and its real implementation `SystemSender` (the standard library only: http.client in a
thread pool of its own, commands as asyncio subprocesses in their own process groups); and
`notifier_environment`, what a notifier command inherits from schedd.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import os
import signal
import ssl
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol
from urllib.parse import unquote, urlsplit

import structlog

from cronraft.daemon.notify_body import tail_text

log = structlog.get_logger("cronraft.notify")


class Sender(Protocol):
    """How a delivery attempt reaches its target. Exceptions (OSError, TimeoutError, ...) are failed
    attempts; cancellation must stop the attempt."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
        """POST `body`; return the HTTP status. Redirects are not followed."""
        ...

    async def run(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: str, stdin: bytes, timeout_s: float
    ) -> int:
        """Run `argv` (no shell) with exactly `env`, `stdin` on its standard input; return its exit code.
        Kill it (its whole process group) and raise TimeoutError after `timeout_s`."""
        ...


class SystemSender:
    """The real `Sender`: http.client in a small thread pool of its own, asyncio subprocesses."""

    def __init__(self, max_threads: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="cronraft-notify")
        self._tls = ssl.create_default_context()

    def close(self) -> None:
        # A blocked request ends at its socket timeout; nobody waits for it.
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._post, url, body, dict(headers), timeout_s)

    def _post(self, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
        parts = urlsplit(url)
        host = parts.hostname or ""
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(host, parts.port, timeout=timeout_s, context=self._tls)
        else:
            conn = http.client.HTTPConnection(host, parts.port, timeout=timeout_s)
        if parts.username is not None:
            userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            headers.setdefault("Authorization", "Basic " + base64.b64encode(userinfo).decode())
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request("POST", target, body=body, headers=headers)
            response = conn.getresponse()
            response.read(65536)  # the receiver's answer is not used; read a little so it is not reset
            return response.status
        finally:
            conn.close()

    async def run(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: str, stdin: bytes, timeout_s: float
    ) -> int:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            cwd=cwd or None,
            start_new_session=True,  # its own process group: a timeout kills its children too
        )
        try:
            async with asyncio.timeout(timeout_s):
                err = await _talk(proc, stdin)
                code = await proc.wait()
        except BaseException:  # timeout or cancellation: never leave it running
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                await asyncio.shield(proc.wait())
            raise
        if code != 0:
            log.debug("notification command failed", exit_code=code, stderr_tail=tail_text(err, 1024))
        return 128 - code if code < 0 else code


async def _talk(proc: asyncio.subprocess.Process, stdin: bytes) -> bytes:
    """Write `stdin` and close it; read stderr keeping its last 1 KiB."""
    assert proc.stdin is not None and proc.stderr is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(stdin)
        await proc.stdin.drain()
    proc.stdin.close()
    tail = bytearray()
    while chunk := await proc.stderr.read(4096):
        tail += chunk
        del tail[:-1024]
    return bytes(tail)


def notifier_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What a notifier command inherits from schedd: its environment without any `CRONRAFT_*` variable,
    which may hold the cluster secret (`CRONRAFT_CLUSTER_SECRET`, the default `secret_env`) or a token.
    The worker keeps the same rule for payloads (client._policy). A secret kept under another name is
    inherited: keep it in `secret_file` or name it `CRONRAFT_*` (docs/security.md)."""
    return {k: v for k, v in environ.items() if not k.startswith("CRONRAFT_")}
