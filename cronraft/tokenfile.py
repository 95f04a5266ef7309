"""The token file: bearer tokens stored as hashes, with their principal, roles and optional expiry.

Shared by the daemon (which reads it, `parse_token_file`, and reloads it on change: daemon.security) and
`schedctl token create` (which appends one entry, `add_token`, and prints the clear token once). Stdlib
only, so that any layer may import it.

Format (TOML), one table per token:

    [[token]]
    principal = "alice"                 # who the token stands for (1-128 printable, no spaces)
    roles = ["operator"]                # every namespace; or per namespace (docs/security.md):
                                        # roles = { "team-a" = ["submitter"], "*" = ["reader"] }
    sha256 = "9f86d0...(64 hex)"        # SHA-256 of the whole clear token
    expires = 2026-06-01T00:00:00Z      # optional; a token past it is refused UNAUTHENTICATED
    created = 2025-12-06T10:00:00Z      # informational

Why a plain SHA-256 and no salt or slow hash: every token is 256 random bits made by `new_token`, so
the hash cannot be reversed by guessing; a slow hash protects low-entropy passwords, which these are not.
Roles given as a list mean namespace "*" (every namespace, the default one included); a table gives
roles per namespace, "*" standing for all of them. `schedctl token create --role ROLE[@NAMESPACE]`
writes either form. `worker` in a namespace binds a worker to it: it is leased only that namespace's
executions (docs/security.md, "Workers").
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cronraft.bounds import MAX_NAMESPACE, NAMESPACE_PATTERN
from cronraft.errors import ConfigError, InvalidArgument

__all__ = [
    "ALL_NAMESPACES",
    "MAX_TOKEN_CHARS",
    "MAX_TOKEN_ENTRIES",
    "MAX_TOKEN_FILE_BYTES",
    "ROLES",
    "TOKEN_PREFIX",
    "TokenEntry",
    "add_token",
    "check_principal",
    "check_roles",
    "hash_token",
    "new_token",
    "parse_role",
    "parse_token_file",
    "read_token_file",
]

# The roles, weakest first for the first four (each includes the ones before it; daemon.security).
ROLES = ("reader", "submitter", "operator", "admin", "worker")
ALL_NAMESPACES = "*"
TOKEN_PREFIX = "crt1_"  # recognisable in logs and secret scanners
MAX_TOKEN_FILE_BYTES = 1 << 20
MAX_TOKEN_ENTRIES = 10_000
MAX_TOKEN_CHARS = 256  # a clear opaque token (JWTs have their own bound: daemon.security)
MAX_PRINCIPAL_CHARS = 128
_PRINCIPAL = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._@:/+-]{{0,{MAX_PRINCIPAL_CHARS - 1}}}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAMESPACE = re.compile(NAMESPACE_PATTERN)


@dataclass(frozen=True, slots=True)
class TokenEntry:
    principal: str
    roles: Mapping[str, frozenset[str]]  # namespace -> roles ("*": every namespace)
    sha256: str
    expires_ms: int | None = None  # Unix ms; None: never


def new_token() -> str:
    """A fresh clear token: the prefix and 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_principal(name: str, field: str) -> str:
    if not _PRINCIPAL.fullmatch(name):
        raise InvalidArgument(
            field,
            f"{name[:40]!r} is not a principal name: 1 to {MAX_PRINCIPAL_CHARS} characters of A-Z a-z 0-9 "
            "and . _ @ : / + -, starting with a letter or digit",
        )
    return name


def check_roles(roles: Any, field: str) -> dict[str, frozenset[str]]:
    """A list of role names (namespace "*"), or a table namespace -> list of role names."""
    table = {ALL_NAMESPACES: roles} if isinstance(roles, list | tuple) else roles
    if not isinstance(table, Mapping) or not table:
        raise InvalidArgument(field, 'give a list of roles, e.g. ["reader"], or a table namespace -> list')
    out: dict[str, frozenset[str]] = {}
    for namespace, names in table.items():
        if not isinstance(namespace, str) or not (
            namespace == ALL_NAMESPACES or _NAMESPACE.fullmatch(namespace)
        ):
            raise InvalidArgument(
                field,
                f'namespace {str(namespace)[: MAX_NAMESPACE + 1]!r}: "*" (every namespace) or 1 to '
                f"{MAX_NAMESPACE} characters of a-z 0-9 and -, starting with a letter or digit",
            )
        if not isinstance(names, list | tuple) or not names:
            raise InvalidArgument(f"{field}.{namespace}", "give a non-empty list of roles")
        for name in names:
            if name not in ROLES:
                known = ", ".join(ROLES)
                raise InvalidArgument(f"{field}.{namespace}", f"unknown role {name!r}; use {known}")
        out[namespace] = frozenset(names)
    return out


def _instant_ms(value: Any, field: str) -> int:
    if isinstance(value, datetime):
        when = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return int(when.timestamp() * 1000)
    raise InvalidArgument(field, "expected a TOML date-time with a zone, e.g. 2026-06-01T00:00:00Z")


def parse_token_file(data: bytes, source: str) -> dict[str, TokenEntry]:
    """The entries of a token file by hash; ConfigError naming `source`, the entry and the field."""
    if len(data) > MAX_TOKEN_FILE_BYTES:
        raise ConfigError(f"{source}: {len(data)} bytes, more than the {MAX_TOKEN_FILE_BYTES} allowed")
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{source}: not a valid TOML token file: {e}") from None
    unknown = set(doc) - {"token"}
    if unknown:
        raise ConfigError(f"{source}: {sorted(unknown)[0]}: unknown key (only [[token]] tables)")
    raw = doc.get("token", [])
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: token: expected [[token]] tables")
    if len(raw) > MAX_TOKEN_ENTRIES:
        raise ConfigError(f"{source}: token: {len(raw)} entries, more than the {MAX_TOKEN_ENTRIES} allowed")
    out: dict[str, TokenEntry] = {}
    for i, item in enumerate(raw):
        where = f"token[{i}]"
        try:
            if not isinstance(item, dict):
                raise InvalidArgument(where, "expected a table")
            extra = set(item) - {"principal", "roles", "sha256", "expires", "created", "comment"}
            if extra:
                raise InvalidArgument(f"{where}.{sorted(extra)[0]}", "unknown key")
            principal = check_principal(str(item.get("principal", "")), f"{where}.principal")
            digest = str(item.get("sha256", ""))
            if not _HEX64.fullmatch(digest):
                raise InvalidArgument(f"{where}.sha256", "expected 64 lowercase hex digits (SHA-256)")
            if digest in out:
                raise InvalidArgument(f"{where}.sha256", "the same token hash appears twice")
            roles = check_roles(item.get("roles"), f"{where}.roles")
            expires = _instant_ms(item["expires"], f"{where}.expires") if "expires" in item else None
        except InvalidArgument as e:
            raise ConfigError(f"{source}: {e}") from None
        out[digest] = TokenEntry(principal, roles, digest, expires)
    return out


def read_token_file(path: Path) -> dict[str, TokenEntry]:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TOKEN_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the token file: {e.strerror or e}") from None
    return parse_token_file(data, str(path))


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_instant(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_role(text: str, field: str = "--role") -> tuple[str, str]:
    """`ROLE` or `ROLE@NAMESPACE` -> (namespace, role); namespace "*" (every one) when not given."""
    role, sep, namespace = text.partition("@")
    if sep and not namespace:
        raise InvalidArgument(field, f"{text!r}: give ROLE or ROLE@NAMESPACE")
    if role not in ROLES:
        raise InvalidArgument(field, f"{text!r}: unknown role {role!r}; use {', '.join(ROLES)}")
    check_roles({namespace or ALL_NAMESPACES: [role]}, field)
    return namespace or ALL_NAMESPACES, role


def _roles_toml(roles: list[str]) -> str:
    """The `roles` value for ROLE[@NAMESPACE] flags: a list when every role is for every namespace (the
    form files had before namespaces), else a table namespace -> roles."""
    table: dict[str, list[str]] = {}
    for text in roles:
        namespace, role = parse_role(text)
        if role not in table.setdefault(namespace, []):
            table[namespace].append(role)
    if set(table) == {ALL_NAMESPACES}:
        return "[" + ", ".join(_toml_string(r) for r in table[ALL_NAMESPACES]) + "]"
    parts = (f"{_toml_string(ns)} = [{', '.join(_toml_string(r) for r in rs)}]" for ns, rs in table.items())
    return "{ " + ", ".join(parts) + " }"


def add_token(
    path: Path, principal: str, roles: list[str], *, expires_ms: int | None = None, now_ms: int
) -> str:
    """Append a new token for `principal` to the file at `path` (created 0600 if absent; replaced
    atomically, so that a node reloading it never reads half an entry); return the clear token. `roles`
    are ROLE or ROLE@NAMESPACE (parse_role)."""
    check_principal(principal, "--principal")
    if not roles:
        raise InvalidArgument("--role", "give at least one role")
    roles_toml = _roles_toml(list(roles))
    existing = b""
    if path.exists():
        existing = path.read_bytes()
        parse_token_file(existing, str(path))  # never append to a file the nodes would refuse
    token = new_token()
    lines = [
        "",
        "[[token]]",
        f"principal = {_toml_string(principal)}",
        f"roles = {roles_toml}",
        f'sha256 = "{hash_token(token)}"',
        f"created = {_toml_instant(now_ms)}",
    ]
    if expires_ms is not None:
        lines.append(f"expires = {_toml_instant(expires_ms)}")
    text = existing.decode("utf-8")
    if not text:
        text = "# Cronraft token file: SHA-256 hashes only (docs/security.md); `schedctl token create`.\n"
    data = (text.rstrip("\n") + "\n" + "\n".join(lines) + "\n").encode("utf-8")
    parse_token_file(data, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return token
