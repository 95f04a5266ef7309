"""The dashboard's pages: the static assets of `static/` (one HTML page, its CSS and JS, written by hand,
shipped in the package: nothing is fetched from elsewhere at run time), and the headers every dashboard
answer carries.

- Security headers: a Content-Security-Policy allowing only this origin's scripts, styles and requests
  (no inline script, no eval, no framing), X-Frame-Options DENY, nosniff, no referrer.
- CSRF: the API authenticates with an `Authorization: Bearer` header, which a browser never attaches by
  itself (no cookie is set), writes take only `application/json` bodies (an HTML form of another site
  cannot send one without a CORS preflight, and no CORS header is ever sent), and a write whose `Origin`
  is another site's is refused. docs/dashboard.md, "Why no CSRF token".
- DNS rebinding: with authentication off (the loopback single node) every caller holds every role, so
  a page of another site whose name was made to resolve to 127.0.0.1 would be same-origin with the
  dashboard. With authentication off, requests must name the node by an IP address or `localhost` in
  their `Host` header.
"""

from __future__ import annotations

import hashlib
import ipaddress
import mimetypes
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit

from aiohttp import web

__all__ = ["SECURITY_HEADERS", "Assets", "Guard"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _json_refusal(status: int, code: str, message: str) -> web.Response:
    body = {"error": {"code": code, "message": message, "field": None, "leader": None}}
    return web.json_response(body, status=status)


class Guard:
    """Wraps every dashboard handler: the host and origin checks, then the security headers."""

    def __init__(self, *, auth_enabled: bool) -> None:
        self.auth_enabled = auth_enabled

    def host_allowed(self, host: str) -> bool:
        if self.auth_enabled:
            return True
        name = urlsplit(f"//{host}").hostname or ""
        if name == "localhost":
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def wrap(self, handler: Handler) -> Handler:
        async def run(request: web.Request) -> web.StreamResponse:
            response: web.StreamResponse
            origin = request.headers.get("Origin")
            if not self.host_allowed(request.host):
                response = _json_refusal(
                    403,
                    "permission_denied",
                    f"Host {request.host[:100]!r}: with authentication off this node answers only requests "
                    "naming it by IP address or localhost (DNS rebinding)",
                )
            elif request.method not in _SAFE_METHODS and origin and urlsplit(origin).netloc != request.host:
                response = _json_refusal(
                    403, "permission_denied", f"a write from another origin ({origin[:100]})"
                )
            else:
                response = await handler(request)
            response.headers.update(SECURITY_HEADERS)
            return response

        return run


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


class Assets:
    """The files of `static/`, read once (they are small) and served with an ETag."""

    def __init__(self, package: str = "cronraft.daemon.dashboard", folder: str = "static") -> None:
        self.files: dict[str, Asset] = {}
        root = resources.files(package) / folder
        for entry in root.iterdir():
            if not entry.is_file() or entry.name.startswith("."):
                continue
            body = entry.read_bytes()
            suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
            ctype = _TYPES.get(suffix) or mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            self.files[entry.name] = Asset(body, ctype, etag)

    def response(self, request: web.Request, name: str) -> web.StreamResponse:
        asset = self.files.get(name)
        if asset is None:
            return web.Response(status=404, text=f"no dashboard file {name[:100]!r}\n")
        headers = {"ETag": asset.etag, "Cache-Control": "no-cache"}
        if request.headers.get("If-None-Match") == asset.etag:
            return web.Response(status=304, headers=headers)
        charset = "utf-8" if asset.content_type.startswith("text/") else None
        return web.Response(
            body=asset.body, content_type=asset.content_type, charset=charset, headers=headers
        )

    async def index(self, request: web.Request) -> web.StreamResponse:
        return self.response(request, "index.html")

    async def static(self, request: web.Request) -> web.StreamResponse:
        return self.response(request, request.match_info["name"])
