"""daemon.security and cronraft.tokenfile without a server: the role table against the proto services,
token file hashing, expiry and reload, JWT verification (HS256, EdDSA), and the config rules."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from grpc_health.v1 import health_pb2

from cronraft.daemon.config import AuthConfig, config_from_dict
from cronraft.daemon.security.authn import Authenticator, JwtVerifier, TokenStore, node_token
from cronraft.daemon.security.authz import ANONYMOUS, RPC_ROLES
from cronraft.daemon.security.interceptor import AuthInterceptor
from cronraft.errors import ConfigError, PermissionDenied, Unauthenticated
from cronraft.proto.v1 import audit_pb2, cluster_pb2, scheduler_pb2, worker_pb2
from cronraft.tokenfile import add_token, hash_token, parse_token_file

NOW_MS = 1_800_000_000_000


def test_every_rpc_of_the_proto_services_has_a_role() -> None:
    methods = {
        f"/{service.full_name}/{method.name}"
        for module in (scheduler_pb2, worker_pb2, cluster_pb2, audit_pb2, health_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    missing = methods - set(RPC_ROLES)
    assert not missing, f"add these to daemon.security.authz.RPC_ROLES: {sorted(missing)}"
    assert RPC_ROLES["/cronraft.v1.Scheduler/CreateTask"] == "submitter"
    assert RPC_ROLES["/cronraft.v1.Scheduler/PurgeDeadLetters"] == "operator"
    assert RPC_ROLES["/cronraft.v1.WorkerGateway/Connect"] == "worker"
    assert RPC_ROLES["/cronraft.v1.Cluster/Status"] == "admin"
    assert RPC_ROLES["/cronraft.v1.Audit/ListAudit"] == "admin"


def _authenticator(tmp_path: Path, **kw: Any) -> tuple[Authenticator, dict[str, str]]:
    path = tmp_path / "tokens.toml"
    tokens = {
        "reader": add_token(path, "rita", ["reader"], now_ms=NOW_MS),
        "submitter": add_token(path, "sam", ["submitter"], now_ms=NOW_MS),
        "expired": add_token(path, "old", ["admin"], expires_ms=NOW_MS - 1, now_ms=NOW_MS - 10),
        "worker": add_token(path, "w1", ["worker"], now_ms=NOW_MS),
    }
    auth = AuthConfig(token_file=path)
    authn = Authenticator(auth, secret="s" * 20, tokens=TokenStore(path), wall_ms=lambda: NOW_MS, **kw)
    return authn, tokens


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def test_token_file_stores_hashes_only_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    token = add_token(path, "alice", ["operator"], now_ms=NOW_MS)
    text = path.read_text()
    assert token not in text
    assert hash_token(token) == hashlib.sha256(token.encode()).hexdigest()
    assert hash_token(token) in text
    assert os.stat(path).st_mode & 0o777 == 0o600
    (entry,) = parse_token_file(path.read_bytes(), "t").values()
    assert entry.principal == "alice" and entry.roles == {"*": frozenset({"operator"})}


def test_token_roles_expiry_and_unknown(tmp_path: Path) -> None:
    authn, tokens = _authenticator(tmp_path)
    check = AuthInterceptor(authn).check
    create = "/cronraft.v1.Scheduler/CreateTask"
    assert check(create, _bearer(tokens["submitter"]), {}).name == "sam"
    assert check("/cronraft.v1.Scheduler/GetTask", _bearer(tokens["submitter"]), {}).name == "sam"
    with pytest.raises(PermissionDenied, match=r"CreateTask needs role submitter .*rita has reader"):
        check(create, _bearer(tokens["reader"]), {})
    with pytest.raises(PermissionDenied, match="needs role worker"):
        check("/cronraft.v1.WorkerGateway/Connect", _bearer(tokens["submitter"]), {})
    with pytest.raises(PermissionDenied, match="needs role reader"):
        check("/cronraft.v1.Scheduler/GetTask", _bearer(tokens["worker"]), {})
    with pytest.raises(Unauthenticated, match="token of old expired at"):
        check(create, _bearer(tokens["expired"]), {})
    with pytest.raises(Unauthenticated, match="not known"):
        check(create, _bearer(tokens["reader"] + "x"), {})
    with pytest.raises(Unauthenticated, match="no credentials"):
        check(create, [], {})
    with pytest.raises(Unauthenticated, match="Bearer"):
        check(create, [("authorization", "Basic abc")], {})
    with pytest.raises(Unauthenticated, match="longer than"):
        check(create, _bearer("x" * 9000), {})
    with pytest.raises(PermissionDenied, match="not in the role table"):
        check("/cronraft.v1.Scheduler/Unheard", _bearer(tokens["submitter"]), {})


def test_member_token_holds_only_the_node_role(tmp_path: Path) -> None:
    authn, _ = _authenticator(tmp_path)
    check = AuthInterceptor(authn).check
    assert check("/cronraft.v1.Cluster/Clock", _bearer(node_token("s" * 20)), {}).source == "node"
    with pytest.raises(PermissionDenied):
        check("/cronraft.v1.Scheduler/GetTask", _bearer(node_token("s" * 20)), {})
    with pytest.raises(Unauthenticated, match="cluster's secret"):
        check("/cronraft.v1.Cluster/Clock", _bearer(node_token("t" * 20)), {})


def test_token_file_reload_on_change_keeps_the_old_table_on_error(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    first = add_token(path, "a", ["reader"], now_ms=NOW_MS)
    now = [0.0]
    store = TokenStore(path, check_s=1.0, clock=lambda: now[0])
    second = add_token(path, "b", ["reader"], now_ms=NOW_MS)
    assert store.lookup(second) is None  # not checked again within the second
    now[0] = 2.0
    assert store.lookup(second) is not None and store.lookup(first) is not None
    path.write_text("[[token]]\nprincipal = 'x'\n")  # broken: the previous table stays
    now[0] = 4.0
    assert store.lookup(second) is not None
    assert store.reload() is False


def test_token_file_errors_name_the_entry_and_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"t: token\[0\]\.roles\.\*: unknown role 'root'"):
        parse_token_file(
            b'[[token]]\nprincipal = "a"\nroles = ["root"]\nsha256 = "' + b"0" * 64 + b'"\n', "t"
        )
    with pytest.raises(ConfigError, match=r"token\[0\]\.sha256: expected 64"):
        parse_token_file(b'[[token]]\nprincipal = "a"\nroles = ["reader"]\nsha256 = "zz"\n', "t")
    with pytest.raises(ConfigError, match="more than the"):
        parse_token_file(b"#" * (2 << 20), "t")


# ------------------------------------------------------------------------------------------------ JWT


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    head = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    return head + "." + _b64(sign(head.encode()))


def _hs256(tmp_path: Path, **kw: Any) -> tuple[JwtVerifier, bytes]:
    key = b"k" * 32
    (tmp_path / "jwt.key").write_bytes(key)
    auth = AuthConfig(jwt_key_file=tmp_path / "jwt.key", jwt_algorithm="HS256", **kw)
    return JwtVerifier(auth, wall=lambda: NOW_MS / 1000), key


def test_jwt_hs256(tmp_path: Path) -> None:
    verifier, key = _hs256(tmp_path, jwt_issuer="idp")
    sign = lambda data: hmac.new(key, data, hashlib.sha256).digest()  # noqa: E731
    good = {"sub": "ci", "roles": ["submitter"], "exp": NOW_MS / 1000 + 60, "iss": "idp"}
    p = verifier.verify(_jwt({"alg": "HS256"}, good, sign))
    assert p.name == "ci" and p.has("submitter") and p.has("reader") and not p.has("operator")
    with pytest.raises(Unauthenticated, match="expired"):
        verifier.verify(_jwt({"alg": "HS256"}, {**good, "exp": NOW_MS / 1000 - 3600}, sign))
    with pytest.raises(Unauthenticated, match="no exp"):
        verifier.verify(_jwt({"alg": "HS256"}, {k: v for k, v in good.items() if k != "exp"}, sign))
    with pytest.raises(Unauthenticated, match="signature"):
        verifier.verify(
            _jwt({"alg": "HS256"}, good, lambda d: hmac.new(b"x" * 32, d, hashlib.sha256).digest())
        )
    with pytest.raises(Unauthenticated, match="alg 'none'"):
        verifier.verify(_jwt({"alg": "none"}, good, lambda d: b""))
    with pytest.raises(Unauthenticated, match="iss"):
        verifier.verify(_jwt({"alg": "HS256"}, {**good, "iss": "other"}, sign))
    with pytest.raises(Unauthenticated, match="roles"):
        verifier.verify(_jwt({"alg": "HS256"}, {**good, "roles": ["root"]}, sign))
    with pytest.raises(Unauthenticated, match="longer than"):
        verifier.verify("a" * 9000)


def test_jwt_eddsa_and_key_checks(tmp_path: Path) -> None:
    private = Ed25519PrivateKey.generate()
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "pub.pem").write_bytes(pem)
    auth = AuthConfig(jwt_key_file=tmp_path / "pub.pem", jwt_algorithm="EdDSA", jwt_audience="cronraft")
    verifier = JwtVerifier(auth, wall=lambda: NOW_MS / 1000)
    claims = {"sub": "w9", "roles": {"*": ["worker"]}, "exp": NOW_MS / 1000 + 60, "aud": ["cronraft"]}
    assert verifier.verify(_jwt({"alg": "EdDSA"}, claims, private.sign)).has("worker")
    other = Ed25519PrivateKey.generate()
    with pytest.raises(Unauthenticated, match="signature"):
        verifier.verify(_jwt({"alg": "EdDSA"}, claims, other.sign))
    with pytest.raises(Unauthenticated, match="aud"):
        verifier.verify(_jwt({"alg": "EdDSA"}, {**claims, "aud": "x"}, private.sign))
    # An HS256 token signed with the public key as HMAC secret (algorithm confusion) is refused.
    with pytest.raises(Unauthenticated, match="alg 'HS256'"):
        verifier.verify(_jwt({"alg": "HS256"}, claims, lambda d: hmac.new(pem, d, hashlib.sha256).digest()))
    (tmp_path / "short.key").write_bytes(b"short")
    with pytest.raises(ConfigError, match="at least 32"):
        JwtVerifier(AuthConfig(jwt_key_file=tmp_path / "short.key"))


def test_anonymous_holds_every_role() -> None:
    assert all(ANONYMOUS.has(r) for r in ("reader", "submitter", "operator", "admin", "worker"))


# ---------------------------------------------------------------------------------------- the config


def _config(grpc: str, raft: str = "127.0.0.1:7101", **extra: Any) -> Any:
    data = {
        "node": {"id": "a", "data_dir": "/tmp/x"},
        "cluster": {"members": [{"id": "a", "grpc_address": grpc, "raft_address": raft}]},
        **extra,
    }
    return config_from_dict(data, "c.toml", environ={})


def test_non_loopback_grpc_needs_tls_and_auth_or_insecure() -> None:
    secret = {"secret": "0123456789abcdef"}
    with pytest.raises(
        ConfigError, match=r"grpc_address: '10\.0\.0\.1:1' is not a loopback address .*no TLS"
    ):
        _config("10.0.0.1:1")
    tls = {"cert": "c.pem", "key": "k.pem"}
    with pytest.raises(ConfigError, match="no authentication"):
        _config("10.0.0.1:1", tls=tls)
    ok = _config("10.0.0.1:1", tls=tls, auth={"token_file": "t.toml"})
    assert ok.tls.enabled and ok.auth.enabled
    assert _config("10.0.0.1:1", insecure=True).insecure
    assert not _config("127.0.0.1:1").tls.enabled
    assert _config("[::1]:1", raft="[::1]:2").auth.enabled is False
    with pytest.raises(
        ConfigError, match=r"raft address 10\.0\.0\.2:2 is not loopback, so a secret is required"
    ):
        _config("127.0.0.1:1", raft="10.0.0.2:2")
    cluster = {"members": [{"id": "a", "grpc_address": "127.0.0.1:1", "raft_address": "10.0.0.2:2"}]}
    assert config_from_dict(
        {"node": {"id": "a"}, "cluster": {**cluster, **secret}}, "c", environ={}
    ).cluster.secret
    with pytest.raises(ConfigError, match=r"cluster\.secret: the secret has 5 characters; use at least 16"):
        config_from_dict({"node": {"id": "a"}, "cluster": {**cluster, "secret": "short"}}, "c", environ={})


def test_tls_and_auth_shape_errors() -> None:
    with pytest.raises(ConfigError, match=r"tls\.key: missing"):
        _config("127.0.0.1:1", tls={"cert": "c.pem"})
    with pytest.raises(ConfigError, match=r"tls\.client_ca: client certificates are checked only with"):
        _config("127.0.0.1:1", tls={"cert": "c", "key": "k", "client_ca": "ca"})
    with pytest.raises(ConfigError, match=r"auth\.cert_roles: client certificates are verified only"):
        _config("127.0.0.1:1", tls={"cert": "c", "key": "k"}, auth={"cert_roles": {"w": ["worker"]}})
    with pytest.raises(ConfigError, match=r"auth\.cert_roles\.w.*unknown role"):
        _config(
            "127.0.0.1:1",
            tls={"cert": "c", "key": "k", "client_ca": "ca", "require_client_cert": True},
            auth={"cert_roles": {"w": ["boss"]}},
        )
    with pytest.raises(ConfigError, match=r"auth\.jwt_issuer: only used with auth\.jwt_key_file"):
        _config("127.0.0.1:1", auth={"jwt_issuer": "x"})
    with pytest.raises(ConfigError, match=r"auth\.jwt_algorithm: 'RS256'"):
        _config("127.0.0.1:1", auth={"jwt_key_file": "k", "jwt_algorithm": "RS256"})
