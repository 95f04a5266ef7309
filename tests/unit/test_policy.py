"""The worker's policy (client/_policy.py): the parser's errors, the egress address checks, the kinds,
the executable allowlist, the inherited environment and secrets. Real processes: test_worker_policy."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cronraft.client._policy import (
    DEFAULT_KINDS,
    EgressPolicy,
    WorkerPolicy,
    load_policy,
    policy_from_dict,
    unwrap,
)
from cronraft.errors import ConfigError
from cronraft.proto.v1 import common_pb2, worker_pb2

DEFAULT = EgressPolicy()


# ------------------------------------------------------------------------------------------ egress


@pytest.mark.parametrize(
    ("address", "category"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),  # carrier-grade NAT
        ("fd12:3456::1", "private"),
        ("fc00::1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped IPv6
        ("::ffff:169.254.169.254", "metadata"),
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("::127.0.0.1", "loopback"),  # IPv4-compatible (deprecated)
    ],
)
def test_default_egress_refuses_special_ranges(address: str, category: str) -> None:
    why = DEFAULT.refusal(address)
    assert why is not None and f"a {category} address" in why


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "224.0.0.1", "255.255.255.255", "ff02::1", "192.0.2.1"])
def test_unroutable_addresses_are_always_refused(address: str) -> None:
    everything = EgressPolicy(
        allow_loopback=True, allow_private=True, allow_link_local=True, allow_metadata=True
    )
    assert "not a routable destination" in (everything.refusal(address) or "")


@pytest.mark.parametrize(
    "address", ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "172.32.0.1"]
)
def test_public_addresses_pass(address: str) -> None:
    assert DEFAULT.refusal(address) is None


def test_allowing_a_range_does_not_allow_metadata() -> None:
    link = EgressPolicy(allow_link_local=True)
    assert link.refusal("169.254.1.1") is None
    assert "metadata" in (link.refusal("169.254.169.254") or "")
    assert EgressPolicy(allow_metadata=True).refusal("169.254.169.254") is None
    loop = EgressPolicy(allow_loopback=True)
    assert loop.refusal("127.0.0.1") is None and loop.refusal("::ffff:127.0.0.1") is None
    assert loop.refusal("10.0.0.1") is not None


def test_allow_and_deny_networks() -> None:
    policy = policy_from_dict(
        {"http": {"allow_networks": ["10.1.0.0/16"], "deny_networks": ["93.184.0.0/16", "2001:db9::/32"]}}
    )
    assert policy.egress_refusal("10.1.2.3") is None
    assert policy.egress_refusal("10.2.0.1") is not None
    assert "deny_networks" in (policy.egress_refusal("93.184.215.14") or "")
    assert "deny_networks" in (policy.egress_refusal("2001:db9::1") or "")
    assert "not an IP address" in (DEFAULT.refusal("example.com") or "")


def test_unwrap() -> None:
    import ipaddress

    assert str(unwrap(ipaddress.ip_address("::ffff:1.2.3.4"))) == "1.2.3.4"
    assert str(unwrap(ipaddress.ip_address("2001:db8::1"))) == "2001:db8::1"
    assert str(unwrap(ipaddress.ip_address("::1"))) == "::1"


# ------------------------------------------------------------------------------------------ parser


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"payload": {}}, "payload: unknown table (did you mean [payloads]?"),
        ({"payloads": {"kind": []}}, "payloads.kind: unknown key (did you mean payloads.kinds?"),
        ({"payloads": {"kinds": ["argv", "ssh"]}}, "payloads.kinds: unknown kind 'ssh'"),
        ({"payloads": {"kinds": "argv"}}, "payloads.kinds: expected an array"),
        (
            {"payloads": {"executables": ["backup"]}},
            "payloads.executables[0]: 'backup' is not an absolute path",
        ),
        ({"env": {"inherit": ["CRONRAFT_TOKEN"]}}, "env.inherit[0]: 'CRONRAFT_TOKEN': CRONRAFT_* variables"),
        ({"env": {"inherit": ["CRON*"]}}, "env.inherit[0]: 'CRON*': CRONRAFT_* variables"),
        ({"env": {"inherit": ["A B"]}}, "env.inherit[0]: 'A B': a variable name"),
        ({"run_as": {"group": "jobs"}}, "run_as.group: set run_as.user too"),
        ({"run_as": {"user": 1000}}, "run_as.user: expected a user/group name"),
        ({"limits": {"open_files": 0}}, "limits.open_files: expected a positive integer"),
        ({"limits": {"cpu_seconds": "60"}}, "limits.cpu_seconds: expected a positive integer"),
        ({"limits": {"memory": 1}}, "limits.memory: unknown key (did you mean limits.memory_bytes?"),
        ({"http": {"allow_loopback": "yes"}}, "http.allow_loopback: expected true or false"),
        ({"http": {"allow_networks": ["10.0.0.0/33"]}}, "http.allow_networks[0]: '10.0.0.0/33' is not"),
        ({"secrets": {"values": {"bad name": "x"}}}, "secrets.values.bad name: a secret name"),
        ({"secrets": {"dir": "relative"}}, "secrets.dir: expected an absolute directory path"),
    ],
)
def test_parser_errors_name_the_field(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        policy_from_dict(data, "p.toml")
    assert str(info.value).startswith("p.toml: ")
    assert message in str(info.value)


def test_defaults_and_flags() -> None:
    policy = policy_from_dict({})
    assert policy == WorkerPolicy() and policy.kinds == DEFAULT_KINDS and "shell" not in policy.kinds
    flagged = policy_from_dict({}, allow_shell=True, allow_http_loopback=True)
    assert "shell" in flagged.kinds and flagged.egress_refusal("127.0.0.1") is None


def test_load_policy_file_with_secrets_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('[payloads]\nkinds = ["argv"]\n[secrets.values]\nTOKEN = "s3cret"\n')
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=r"group or others may read it \(mode 644\); run `chmod 600 "):
        load_policy(path)
    path.chmod(0o600)
    policy = load_policy(path)
    assert policy.kinds == {"argv"} and policy.secrets == {"TOKEN": "s3cret"}
    assert "s3cret" not in repr(policy)
    path.write_text("[payloads\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_policy(path)
    with pytest.raises(ConfigError, match="policy file not found"):
        load_policy(tmp_path / "missing.toml")


def test_secrets_dir_must_be_private(tmp_path: Path) -> None:
    d = tmp_path / "secrets"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    with pytest.raises(
        ConfigError, match=r"secrets.dir: .* open to group or others \(mode 755\); run `chmod 700"
    ):
        policy_from_dict({"secrets": {"dir": str(d)}})
    d.chmod(0o700)
    assert policy_from_dict({"secrets": {"dir": str(d)}}).secrets_dir == d


# ------------------------------------------------------------------------------------------ decisions


def lease(payload: common_pb2.Payload, probe: common_pb2.Payload | None = None) -> worker_pb2.Lease:
    out = worker_pb2.Lease(execution_id="e1", payload=payload)
    if probe is not None:
        out.sensor.probe.CopyFrom(probe)
    return out


def argv(*words: str, env: dict[str, str] | None = None) -> common_pb2.Payload:
    return common_pb2.Payload(command=common_pb2.CommandPayload(argv=list(words), env=env or {}))


def test_kinds_are_refused_with_the_reason() -> None:
    policy = WorkerPolicy()
    shell = common_pb2.Payload(shell=common_pb2.ShellPayload(script="echo hi"))
    assert "this worker does not run shell payloads (schedworker --allow-shell" in (
        policy.refusal(lease(shell), {}) or ""
    )
    assert policy.refusal(lease(argv("true")), {}) is None
    # A sensor's probe is checked too.
    assert "sensor.probe: this worker does not run shell" in (
        policy.refusal(lease(argv("true"), shell), {}) or ""
    )
    only_http = policy_from_dict({"payloads": {"kinds": ["http"]}})
    assert "does not run argv payloads; it accepts http" in (only_http.refusal(lease(argv("true")), {}) or "")


def test_executable_allowlist_resolves_through_path(tmp_path: Path) -> None:
    tool = tmp_path / "bin" / "tool"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    policy = policy_from_dict({"payloads": {"executables": [str(tool)]}})
    env = {"PATH": f"{tool.parent}:/usr/bin:/bin"}
    assert policy.refusal(lease(argv("tool")), env) is None
    assert policy.resolve_program(["tool", "-x"], None, env) == [str(tool), "-x"]
    why = policy.refusal(lease(argv("sh", "-c", "id")), env) or ""
    assert "payload.command.argv[0]: 'sh' (resolves to " in why and "executable allowlist" in why
    # A PATH set by the task cannot make another program pass for an allowed name.
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "tool").write_text("#!/bin/sh\n")
    (evil / "tool").chmod(0o755)
    assert policy.refusal(lease(argv("tool", env={"PATH": str(evil)})), env) is not None
    assert policy.refusal(lease(argv("/nonexistent/tool")), env) is not None


def test_inherited_environment_never_passes_cronraft_variables() -> None:
    policy = policy_from_dict({"env": {"inherit": ["PATH", "LC_*", "CUSTOM"]}})
    environ = {
        "PATH": "/bin",
        "LC_ALL": "C",
        "CUSTOM": "1",
        "SECRETISH": "no",
        "CRONRAFT_CLUSTER_SECRET": "s",
        "CRONRAFT_TOKEN": "t",
    }
    assert policy.inherited_env(environ) == {"PATH": "/bin", "LC_ALL": "C", "CUSTOM": "1"}
    assert "CRONRAFT_TOKEN" not in WorkerPolicy().inherited_env({**environ, "HOME": "/root"})


def test_secret_values_resolve_from_the_policy_and_a_directory(tmp_path: Path) -> None:
    d = tmp_path / "secrets"
    d.mkdir(mode=0o700)
    (d / "db_password").write_text("from-file\n")
    policy = policy_from_dict({"secrets": {"dir": str(d), "values": {"api_key": "k-123"}}})
    env = policy.payload_env({"A": "secret:api_key", "B": "secret:db_password", "C": "plain"}, {})
    assert env == {"A": "k-123", "B": "from-file", "C": "plain"}
    why = policy.refusal(lease(argv("true", env={"X": "secret:nope"})), {}) or ""
    assert "payload.command.env['X']: secret 'nope' is not defined on this worker" in why
    http = common_pb2.Payload(http=common_pb2.HttpPayload(url="https://x", headers={"Auth": "secret:nope"}))
    assert "payload.http.headers['Auth']: secret 'nope'" in (policy.refusal(lease(http), {}) or "")
    assert "is no secret name" in (
        policy.refusal(lease(argv("true", env={"X": "secret:../etc/passwd"})), {}) or ""
    )


def test_limits_become_rlimits() -> None:
    import resource

    policy = policy_from_dict(
        {"limits": {"cpu_seconds": 5, "open_files": 64, "processes": 100, "memory_bytes": 1 << 30}}
    )
    assert dict(policy.limits.rlimits()) == {
        resource.RLIMIT_CPU: 5,
        resource.RLIMIT_NOFILE: 64,
        resource.RLIMIT_NPROC: 100,
        resource.RLIMIT_AS: 1 << 30,
    }


def test_run_as_unknown_user_is_a_start_error() -> None:
    from cronraft.client.worker import process_identity

    with pytest.raises(ConfigError, match=r"run_as\.user: no user 'no-such-user-xyz'"):
        process_identity(policy_from_dict({"run_as": {"user": "no-such-user-xyz"}}))
    if os.geteuid() == 0:
        identity = process_identity(policy_from_dict({"run_as": {"user": "nobody"}}))
        assert identity is not None and identity.uid != 0 and identity.env["USER"] == "nobody"


def test_policy_file_mode_constant_sanity() -> None:
    assert stat.S_IRWXG | stat.S_IRWXO == 0o077 and sys.platform.startswith("linux")


# ------------------------------------------------------------------------------------------ HTTP egress


def _serve() -> tuple[ThreadingHTTPServer, list[dict[str, str]]]:
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return server, seen


async def _request(
    url: str, policy: WorkerPolicy, headers: dict[str, str] | None = None
) -> tuple[Any, bytes]:
    from cronraft.client._http import run_http
    from cronraft.client._inprocess_runner import InProcessIO
    from cronraft.client._runner import TailBuffer

    stdout, stderr = TailBuffer(1 << 16), TailBuffer(1 << 16)
    io = InProcessIO(asyncio.get_running_loop(), stdout, stderr, None)
    payload = common_pb2.Payload(http=common_pb2.HttpPayload(url=url, headers=headers or {}))
    outcome = await run_http(
        worker_pb2.Lease(execution_id="e1", payload=payload, timeout_ms=5000), io, policy
    )
    await asyncio.sleep(0.05)  # the thread's writes land on the loop
    return outcome, stderr.value()


@pytest.mark.asyncio
async def test_http_to_a_name_resolving_to_loopback_is_refused_before_connecting() -> None:
    server, seen = _serve()
    try:
        url = f"http://localhost:{server.server_address[1]}/x"
        outcome, _ = await _request(url, WorkerPolicy())
        assert outcome.outcome == common_pb2.ATTEMPT_REFUSED
        assert "payload.http.url: host 'localhost': " in outcome.error and "loopback" in outcome.error
        assert seen == []
        allowed = policy_from_dict(
            {"secrets": {"values": {"tok": "Bearer s3cret"}}}, allow_http_loopback=True
        )
        outcome, stderr = await _request(url, allowed, {"Authorization-Token": "secret:tok"})
        assert outcome.outcome == common_pb2.ATTEMPT_SUCCEEDED, outcome.error
        # Connected to the checked address, with the URL's name kept for the Host header.
        assert seen[0]["Host"] == f"localhost:{server.server_address[1]}"
        assert seen[0]["Authorization-Token"] == "Bearer s3cret"
        assert b"s3cret" not in stderr and b"Authorization-Token: <redacted>" in stderr
    finally:
        server.shutdown()
        server.server_close()
