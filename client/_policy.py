"""The worker's policy: what a worker agrees to run, with what, as whom and within which limits.

A task spec comes from whoever may create tasks; the worker's policy comes from the worker's own
operator (`schedworker --policy FILE`, a TOML file, plus a few `--allow-*` flags), and the policy wins.
This module owns the policy's parsing (`load_policy`, `policy_from_dict`: errors name the key and the
change to make), and the pure decisions built on it:

- `refusal(lease, environ)`: why a lease is refused (a payload kind this worker does not accept, a
  program outside the executable allowlist, a secret it cannot resolve), or None;
- `payload_env(...)`: the environment a payload starts with: only the inherited variables the policy
  names (never a `CRONRAFT_*` variable of the worker: those may hold its token or the cluster secret),
  then the task's own env with `secret:NAME` values resolved here, on the worker;
- `egress_refusal(address)`: whether an HTTP payload may connect to an IP address (loopback, link-local,
  private, metadata and other special ranges are refused unless allowed). The HTTP runner resolves the
  name once, checks the addresses it got and connects to a checked one (client/_http.py): the address
  checked is the address connected to.

A refused lease ends its execution `failed` with the reason (ATTEMPT_REFUSED: final, never retried:
raft/commands/leases.py). The reference is docs/operations.md, "Worker policy"; docs/security.md says why.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import ipaddress
import os
import re
import shutil
import stat
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cronraft.errors import ConfigError
from cronraft.proto.v1 import common_pb2, worker_pb2

__all__ = [
    "DEFAULT_ENV",
    "DEFAULT_KINDS",
    "KINDS",
    "EgressPolicy",
    "Limits",
    "PolicyRefusal",
    "WorkerPolicy",
    "load_policy",
    "policy_from_dict",
]

# Payload kinds as the policy names them, and the payload oneof field of each.
KINDS = ("argv", "shell", "http", "handler")
_KIND_OF_FIELD = {"command": "argv", "shell": "shell", "http": "http", "handler": "handler"}
DEFAULT_KINDS = frozenset({"argv", "http", "handler"})  # shell: only when enabled
# Variables a payload inherits from the worker by default (a trailing * matches a prefix).
DEFAULT_ENV = ("PATH", "HOME", "LANG", "LC_*", "TZ", "USER", "LOGNAME", "TMPDIR")
SECRET_PREFIX = "secret:"
_SECRET_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_ENV_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\*?$")
MAX_SECRET_BYTES = 64 * 1024
MAX_LIST = 1024  # entries of any list of the policy
_MAX_POLICY_BYTES = 1024 * 1024

# Addresses an HTTP payload may not reach unless the policy allows them: (category, networks).
_LOOPBACK = ("loopback", ("127.0.0.0/8", "::1/128"))
_LINK_LOCAL = ("link_local", ("169.254.0.0/16", "fe80::/10"))
_PRIVATE = (
    "private",
    ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"),
)
# Cloud instance metadata services: credentials of the machine. Refused even when link-local or private
# ranges are allowed, unless allowed by name (allow_metadata).
_METADATA = (
    "metadata",
    ("169.254.169.254/32", "169.254.170.2/32", "fd00:ec2::254/128", "100.100.100.200/32"),
)
# Never a real destination: unspecified, multicast, broadcast, reserved, documentation.
_SPECIAL = (
    "special",
    (
        "0.0.0.0/8",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "::/128",
        "ff00::/8",
        "2001:db8::/32",
        "100::/64",
    ),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _nets(cidrs: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


_CATEGORIES: tuple[tuple[str, tuple[Network, ...]], ...] = tuple(
    (name, _nets(cidrs)) for name, cidrs in (_METADATA, _LOOPBACK, _LINK_LOCAL, _PRIVATE, _SPECIAL)
)


class PolicyRefusal(Exception):
    """A lease this worker's policy does not allow; the message is the reason the execution shows."""


def unwrap(address: Address) -> Address:
    """The IPv4 address inside an IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d) or NAT64
    (64:ff9b::a.b.c.d) IPv6 address: a connection to it reaches that IPv4 address, so that is checked."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        packed = int(address)
        if 1 < packed <= 0xFFFFFFFF:  # ::a.b.c.d (deprecated IPv4-compatible); :: and ::1 excluded
            return ipaddress.IPv4Address(packed)
    return address


@dataclass(frozen=True)
class EgressPolicy:
    """Where HTTP payloads may connect. `allow_networks` wins over every refusal; `deny_networks` adds
    refusals."""

    allow_loopback: bool = False
    allow_private: bool = False
    allow_link_local: bool = False
    allow_metadata: bool = False
    allow_networks: tuple[Network, ...] = ()
    deny_networks: tuple[Network, ...] = ()

    def refusal(self, text: str) -> str | None:
        """Why an HTTP payload may not connect to IP address `text`, or None."""
        try:
            raw = ipaddress.ip_address(text.split("%", 1)[0])  # fe80::1%eth0: the zone is not the address
        except ValueError:
            return f"{text!r} is not an IP address"
        address = unwrap(raw)
        shown = str(raw) if address == raw else f"{raw} (that is {address})"
        if any(address in n for n in self.allow_networks if n.version == address.version):
            return None
        if any(address in n for n in self.deny_networks if n.version == address.version):
            return f"{shown} is in http.deny_networks"
        allowed = {
            "loopback": self.allow_loopback,
            "link_local": self.allow_link_local,
            "private": self.allow_private,
            "metadata": self.allow_metadata,
            "special": False,
        }
        for category, networks in _CATEGORIES:
            if any(address in n for n in networks if n.version == address.version):
                if allowed[category]:
                    return None
                if category == "special":
                    return f"{shown} is not a routable destination"
                return (
                    f"{shown} is a {category.replace('_', '-')} address; this worker's policy refuses it "
                    f"(http.allow_{category} = true, or the network in http.allow_networks, allows it)"
                )
        return None


@dataclass(frozen=True)
class Limits:
    """setrlimit values applied to every process payload (argv, shell) and its children; None: none."""

    cpu_seconds: int | None = None
    memory_bytes: int | None = None  # the address space (RLIMIT_AS)
    open_files: int | None = None
    processes: int | None = None  # processes of the payload's user (RLIMIT_NPROC)

    def rlimits(self) -> list[tuple[int, int]]:
        import resource

        out = []
        for value, which in (
            (self.cpu_seconds, resource.RLIMIT_CPU),
            (self.memory_bytes, resource.RLIMIT_AS),
            (self.open_files, resource.RLIMIT_NOFILE),
            (self.processes, resource.RLIMIT_NPROC),
        ):
            if value is not None:
                out.append((which, value))
        return out


@dataclass(frozen=True)
class WorkerPolicy:
    """A worker's policy, validated once (`policy_from_dict`). The default is the secure one."""

    kinds: frozenset[str] = DEFAULT_KINDS
    executables: tuple[str, ...] | None = None  # absolute paths; None: any program
    env_inherit: tuple[str, ...] = DEFAULT_ENV
    run_as_user: str | None = None
    run_as_group: str | None = None
    limits: Limits = Limits()
    http: EgressPolicy = EgressPolicy()
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    secrets_dir: Path | None = None
    source: str = field(default="<default policy>", compare=False)

    # -- decisions ---------------------------------------------------------------------------------

    def refusal(self, lease: worker_pb2.Lease, environ: Mapping[str, str]) -> str | None:
        """Why this worker refuses `lease` (its payload, or its sensor's probe), or None."""
        try:
            self.check_payload(lease.payload, "payload", environ)
            if lease.HasField("sensor"):
                self.check_payload(lease.sensor.probe, "sensor.probe", environ)
        except PolicyRefusal as exc:
            return str(exc)
        return None

    def check_payload(self, payload: common_pb2.Payload, where: str, environ: Mapping[str, str]) -> None:
        kind_field = payload.WhichOneof("kind")
        if kind_field is None:
            return  # the runner says the lease has no payload
        kind = _KIND_OF_FIELD.get(kind_field, kind_field)
        if kind not in self.kinds:
            hint = " (schedworker --allow-shell, or shell in payloads.kinds)" if kind == "shell" else ""
            raise PolicyRefusal(
                f"{where}: this worker does not run {kind} payloads{hint}; it accepts "
                f"{', '.join(sorted(self.kinds)) or 'none'}"
            )
        if kind == "argv":
            env = self.payload_env(payload.command.env, environ, f"{where}.command.env")
            self.resolve_program(list(payload.command.argv), payload.command.cwd or None, env, where)
        elif kind == "http":
            for name, value in payload.http.headers.items():
                self.resolve_value(value, f"{where}.http.headers[{name!r}]")

    def resolve_program(
        self, argv: list[str], cwd: str | None, env: Mapping[str, str], where: str = "payload"
    ) -> list[str]:
        """`argv` with its program as the allowlisted absolute path it resolves to (so that what runs is
        what was checked); unchanged without an allowlist."""
        if self.executables is None or not argv:
            return argv
        program = argv[0]
        if "/" in program:
            path = program if os.path.isabs(program) or cwd is None else os.path.join(cwd, program)
        else:
            path = shutil.which(program, path=env.get("PATH", os.defpath)) or ""
        real = os.path.realpath(path) if path else ""
        allowed = {os.path.realpath(e) for e in self.executables}
        if not real or real not in allowed:
            found = f" (resolves to {real})" if real and real != program else ""
            raise PolicyRefusal(
                f"{where}.command.argv[0]: {program!r}{found} is not in this worker's executable "
                "allowlist (payloads.executables)"
            )
        return [real, *argv[1:]]

    @functools.cached_property
    def _inherit(self) -> re.Pattern[str]:
        """env.inherit as one expression (every attempt filters the worker's environment with it)."""
        return re.compile("|".join(fnmatch.translate(p) for p in self.env_inherit) or "(?!)")

    def inherited_env(self, environ: Mapping[str, str]) -> dict[str, str]:
        """The worker's variables a payload inherits: those env.inherit names, never CRONRAFT_*."""
        match = self._inherit.match
        return {k: v for k, v in environ.items() if not k.startswith("CRONRAFT_") and match(k)}

    def payload_env(
        self, task_env: Mapping[str, str], environ: Mapping[str, str], where: str = "payload.command.env"
    ) -> dict[str, str]:
        """The inherited variables, then the task's env with `secret:NAME` values resolved."""
        env = self.inherited_env(environ)
        for name, value in task_env.items():
            env[name] = self.resolve_value(value, f"{where}[{name!r}]")
        return env

    def resolve_value(self, value: str, where: str) -> str:
        """`value`, or the secret it names (`secret:NAME`): from [secrets] values, else the file NAME in
        secrets.dir, read now (a rotated secret is picked up by the next attempt)."""
        if not value.startswith(SECRET_PREFIX):
            return value
        name = value[len(SECRET_PREFIX) :]
        if not _SECRET_NAME.match(name):
            raise PolicyRefusal(f"{where}: {value[:140]!r} is no secret name (1-128 of A-Z a-z 0-9 _ . -)")
        if name in self.secrets:
            return self.secrets[name]
        if self.secrets_dir is not None:
            path = self.secrets_dir / name
            try:
                with open(path, "rb") as f:
                    data = f.read(MAX_SECRET_BYTES + 1)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise PolicyRefusal(f"{where}: secret {name!r}: cannot read {path}: {exc.strerror}") from None
            else:
                if len(data) > MAX_SECRET_BYTES:
                    raise PolicyRefusal(f"{where}: secret {name!r} is larger than {MAX_SECRET_BYTES} bytes")
                text = data.decode("utf-8", "replace")
                return text[:-1] if text.endswith("\n") else text
        raise PolicyRefusal(
            f"{where}: secret {name!r} is not defined on this worker ([secrets] or secrets.dir of its policy)"
        )

    def egress_refusal(self, address: str) -> str | None:
        return self.http.refusal(address)

    def describe(self) -> dict[str, Any]:
        """What the worker logs at start (no secret values)."""
        return {
            "policy": self.source,
            "payload_kinds": ",".join(sorted(self.kinds)),
            "executables": "any" if self.executables is None else len(self.executables),
            "env_inherit": ",".join(self.env_inherit),
            "run_as": self.run_as_user or "",
            "http_allow": ",".join(
                name
                for name, on in (
                    ("loopback", self.http.allow_loopback),
                    ("private", self.http.allow_private),
                    ("link_local", self.http.allow_link_local),
                    ("metadata", self.http.allow_metadata),
                )
                if on
            ),
            "secrets": len(self.secrets) + (0 if self.secrets_dir is None else 1),
        }


# -- parsing ------------------------------------------------------------------------------------------

_TABLES = {
    "payloads": ("kinds", "executables"),
    "env": ("inherit",),
    "run_as": ("user", "group"),
    "limits": ("cpu_seconds", "memory_bytes", "open_files", "processes"),
    "http": (
        "allow_loopback",
        "allow_private",
        "allow_link_local",
        "allow_metadata",
        "allow_networks",
        "deny_networks",
    ),
    "secrets": ("dir", "values"),
}


def load_policy(path: str | os.PathLike[str]) -> WorkerPolicy:
    """Read and validate a policy file. It may hold secrets: refused when group or others can read it."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            raw = f.read(_MAX_POLICY_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{source}: policy file not found") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the policy file: {exc.strerror or exc}") from None
    if len(raw) > _MAX_POLICY_BYTES:
        raise ConfigError(f"{source}: larger than {_MAX_POLICY_BYTES} bytes")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    policy = policy_from_dict(data, source)
    if policy.secrets and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{source}: holds [secrets.values] but group or others may read it (mode "
            f"{stat.S_IMODE(mode):03o}); run `chmod 600 {source}`"
        )
    return policy


def _err(source: str, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{source}: {key}: {problem}")


def _table(data: Mapping[str, Any], name: str, source: str) -> Mapping[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, Mapping):
        raise _err(source, name, "expected a table")
    allowed = _TABLES[name]
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {name}.{close[0]}? " if close else ""
            raise _err(source, f"{name}.{key}", f"unknown key ({hint}allowed: {', '.join(allowed)})")
    return table


def _strings(value: Any, source: str, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _err(source, key, "expected an array of non-empty strings")
    if len(value) > MAX_LIST:
        raise _err(source, key, f"at most {MAX_LIST} entries")
    return list(value)


def _bool(t: Mapping[str, Any], name: str, source: str, key: str) -> bool:
    value = t.get(name, False)
    if not isinstance(value, bool):
        raise _err(source, key, "expected true or false")
    return value


def _limit(t: Mapping[str, Any], name: str, source: str) -> int | None:
    if name not in t:
        return None
    value = t[name]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**62:
        raise _err(source, f"limits.{name}", f"expected a positive integer, got {value!r}")
    return value


def _networks(value: Any, source: str, key: str) -> tuple[Network, ...]:
    out = []
    for i, text in enumerate(_strings(value, source, key)):
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise _err(source, f"{key}[{i}]", f"{text!r} is not an address or network ({exc})") from None
    return tuple(out)


def policy_from_dict(
    data: Mapping[str, Any],
    source: str = "<policy>",
    *,
    allow_shell: bool = False,
    allow_http_loopback: bool = False,
) -> WorkerPolicy:
    """Validate a parsed policy; the flags add to it (`--allow-shell`, `--allow-http-loopback`)."""
    for key in data:
        if key not in _TABLES:
            close = difflib.get_close_matches(key, list(_TABLES), n=1)
            hint = f"did you mean [{close[0]}]? " if close else ""
            raise _err(source, key, f"unknown table ({hint}allowed: {', '.join(_TABLES)})")
    payloads = _table(data, "payloads", source)
    kinds = set(DEFAULT_KINDS)
    if "kinds" in payloads:
        kinds = set(_strings(payloads["kinds"], source, "payloads.kinds"))
        for kind in kinds:
            if kind not in KINDS:
                raise _err(source, "payloads.kinds", f"unknown kind {kind!r}; use {', '.join(KINDS)}")
    if allow_shell:
        kinds.add("shell")
    executables: tuple[str, ...] | None = None
    if "executables" in payloads:
        executables = tuple(_strings(payloads["executables"], source, "payloads.executables"))
        for i, path in enumerate(executables):
            if not os.path.isabs(path):
                raise _err(
                    source,
                    f"payloads.executables[{i}]",
                    f"{path!r} is not an absolute path (a name would be looked up in a PATH the task sets)",
                )

    env_t = _table(data, "env", source)
    inherit = tuple(_strings(env_t.get("inherit", list(DEFAULT_ENV)), source, "env.inherit"))
    for i, pattern in enumerate(inherit):
        if not _ENV_PATTERN.match(pattern):
            raise _err(source, f"env.inherit[{i}]", f"{pattern!r}: a variable name, or a prefix ending in *")
        if pattern.startswith("CRONRAFT_") or fnmatch.fnmatchcase("CRONRAFT_", pattern):
            raise _err(
                source, f"env.inherit[{i}]", f"{pattern!r}: CRONRAFT_* variables are never passed to payloads"
            )

    run_as = _table(data, "run_as", source)
    user = run_as.get("user")
    group = run_as.get("group")
    for name, value in (("user", user), ("group", group)):
        if value is not None and (not isinstance(value, str) or not value):
            raise _err(source, f"run_as.{name}", "expected a user/group name or a number as a string")
    if group is not None and user is None:
        raise _err(source, "run_as.group", "set run_as.user too")

    limits_t = _table(data, "limits", source)
    limits = Limits(*(_limit(limits_t, n, source) for n in _TABLES["limits"]))

    http_t = _table(data, "http", source)
    http = EgressPolicy(
        allow_loopback=_bool(http_t, "allow_loopback", source, "http.allow_loopback") or allow_http_loopback,
        allow_private=_bool(http_t, "allow_private", source, "http.allow_private"),
        allow_link_local=_bool(http_t, "allow_link_local", source, "http.allow_link_local"),
        allow_metadata=_bool(http_t, "allow_metadata", source, "http.allow_metadata"),
        allow_networks=_networks(http_t.get("allow_networks", []), source, "http.allow_networks"),
        deny_networks=_networks(http_t.get("deny_networks", []), source, "http.deny_networks"),
    )

    secrets_t = _table(data, "secrets", source)
    values = secrets_t.get("values", {})
    if not isinstance(values, Mapping):
        raise _err(source, "secrets.values", 'expected a table of NAME = "value"')
    if len(values) > MAX_LIST:
        raise _err(source, "secrets.values", f"at most {MAX_LIST} secrets")
    for name, value in values.items():
        if not _SECRET_NAME.match(name):
            raise _err(source, f"secrets.values.{name}", "a secret name is 1-128 of A-Z a-z 0-9 _ . -")
        if not isinstance(value, str) or len(value.encode()) > MAX_SECRET_BYTES:
            raise _err(
                source, f"secrets.values.{name}", f"expected a string of at most {MAX_SECRET_BYTES} bytes"
            )
    secrets_dir = None
    if "dir" in secrets_t:
        raw_dir = secrets_t["dir"]
        if not isinstance(raw_dir, str) or not os.path.isabs(raw_dir):
            raise _err(source, "secrets.dir", "expected an absolute directory path")
        secrets_dir = Path(raw_dir)
        try:
            mode = os.stat(secrets_dir).st_mode
        except OSError as exc:
            raise _err(source, "secrets.dir", f"{raw_dir}: {exc.strerror}") from None
        if not stat.S_ISDIR(mode):
            raise _err(source, "secrets.dir", f"{raw_dir} is not a directory")
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise _err(
                source,
                "secrets.dir",
                f"{raw_dir} is open to group or others (mode {stat.S_IMODE(mode):03o}); "
                f"run `chmod 700 {raw_dir}`",
            )
    return WorkerPolicy(
        kinds=frozenset(kinds),
        executables=executables,
        env_inherit=inherit,
        run_as_user=user,
        run_as_group=group,
        limits=limits,
        http=http,
        secrets=dict(values),
        secrets_dir=secrets_dir,
        source=source,
    )
