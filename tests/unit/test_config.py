"""daemon/config.py: every shipped config loads, the embedded default is single-node.toml, and each
validation error names the file and the dotted key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cronraft.daemon.config import (
    Config,
    config_from_dict,
    default_config,
    load_config,
    split_host_port,
)
from cronraft.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILES = sorted((REPO_ROOT / "cluster-configs").rglob("*.toml"))
SECRET_ENV = {"CRONRAFT_CLUSTER_SECRET": "s3cret-for-tests"}

THREE_MEMBERS = """
[[cluster.members]]
id = "a"
grpc_address = "127.0.0.1:7001"
raft_address = "127.0.0.1:7101"

[[cluster.members]]
id = "b"
grpc_address = "127.0.0.1:7002"
raft_address = "127.0.0.1:7102"

[[cluster.members]]
id = "c"
grpc_address = "127.0.0.1:7003"
raft_address = "127.0.0.1:7103"
"""

ONE_MEMBER = """
[node]
id = "a"

[[cluster.members]]
id = "a"
grpc_address = "127.0.0.1:7001"
raft_address = "127.0.0.1:7101"
"""


def load_text(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Config:
    path = tmp_path / "x.toml"
    path.write_text(text)
    return load_config(path, environ={} if environ is None else environ)


def config_error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, environ)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'x.toml'}: "), message
    return message


def test_there_are_shipped_configs() -> None:
    names = {p.relative_to(REPO_ROOT / "cluster-configs").as_posix() for p in CONFIG_FILES}
    assert {"single-node.toml", "three-node/node1.toml", "five-node/node5.toml"} <= names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_every_shipped_config_loads(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)  # the documented way: relative paths resolve against the cwd
    config = load_config(path, environ=SECRET_ENV)
    assert config.node.id == ("node1" if path.name == "single-node.toml" else path.stem)
    # Each shipped cluster keeps its data apart: a data dir must never be shared by two clusters.
    folder = "" if path.name == "single-node.toml" else path.parent.name
    assert config.node.data_dir == REPO_ROOT / "data" / folder / config.node.id
    assert config.self_member.id == config.node.id
    assert len(config.peers) == len(config.cluster.members) - 1
    if len(config.cluster.members) > 1:
        assert config.cluster.secret == SECRET_ENV["CRONRAFT_CLUSTER_SECRET"]


@pytest.mark.parametrize("folder", ["three-node", "five-node"])
def test_members_of_a_folder_agree(folder: str) -> None:
    configs = [
        load_config(p, environ=SECRET_ENV)
        for p in sorted((REPO_ROOT / "cluster-configs" / folder).glob("*.toml"))
    ]
    assert len(configs) == len(configs[0].cluster.members)
    assert len({c.cluster.members for c in configs}) == 1
    assert sorted(c.node.id for c in configs) == sorted(m.id for m in configs[0].cluster.members)


def test_embedded_default_is_single_node_toml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    assert default_config() == load_config(REPO_ROOT / "cluster-configs" / "single-node.toml", environ={})
    assert default_config().cluster.secret is None


def test_defaults_and_properties(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_text(
        tmp_path,
        '[node]\nid = "b"\n[cluster]\nsecret_env = "S"\n' + THREE_MEMBERS,
        {"S": " tok-0123456789abcdef \n"},
    )
    assert config.node.data_dir == tmp_path / "data" / "b"
    assert config.cluster.secret == "tok-0123456789abcdef"
    assert config.cluster.secret_source == "env:S"
    assert config.cluster.durability == "replicated"
    assert config.self_member.raft_address == "127.0.0.1:7102"
    assert [m.id for m in config.peers] == ["a", "c"]
    assert config.raft.election_timeout_ms == 1000
    assert config.scheduler.heartbeat_interval_ms == 2000
    assert config.log.format == "console"
    assert "tok-0123456789abcdef" not in repr(config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.node.id = "x"  # type: ignore[misc]


def test_config_from_dict_names_the_source() -> None:
    with pytest.raises(ConfigError, match=r"^somewhere: node\.id: missing"):
        config_from_dict(
            {"cluster": {"members": [{"id": "a", "grpc_address": "h:1", "raft_address": "h:2"}]}}, "somewhere"
        )


def test_unknown_key(tmp_path: Path) -> None:
    message = config_error(tmp_path, ONE_MEMBER + "[raft]\nelection_timout_ms = 1000\n")
    assert "raft.election_timout_ms: unknown key" in message
    assert "did you mean raft.election_timeout_ms?" in message


def test_unknown_section(tmp_path: Path) -> None:
    assert ": schedular: unknown key (did you mean scheduler?" in config_error(
        tmp_path, ONE_MEMBER + "[schedular]\n"
    )


def test_unknown_member_key(tmp_path: Path) -> None:
    text = ONE_MEMBER.replace("grpc_address", "grpc_adress")
    assert "cluster.members[0].grpc_adress: unknown key" in config_error(tmp_path, text)


def test_node_id_not_a_member(tmp_path: Path) -> None:
    message = config_error(tmp_path, ONE_MEMBER.replace('id = "a"\n\n[[', 'id = "z"\n\n[['))
    assert "node.id: 'z' is not one of the cluster.members ids ['a']" in message


def test_duplicate_address(tmp_path: Path) -> None:
    text = '[node]\nid = "a"\n[cluster]\nsecret = "x"\n' + THREE_MEMBERS.replace("7102", "7101")
    message = config_error(tmp_path, text)
    assert "cluster.members[1].raft_address: duplicate address '127.0.0.1:7101'" in message
    assert "cluster.members[0].raft_address" in message


def test_address_used_for_grpc_and_raft(tmp_path: Path) -> None:
    message = config_error(tmp_path, ONE_MEMBER.replace("7101", "7001"))
    assert "cluster.members[0].raft_address: duplicate address" in message


def test_duplicate_member_id(tmp_path: Path) -> None:
    text = '[node]\nid = "a"\n[cluster]\nsecret = "x"\n' + THREE_MEMBERS.replace('id = "b"', 'id = "a"')
    assert "cluster.members[1].id: duplicate member id 'a'" in config_error(tmp_path, text)


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1:70000", "not a number in 1..65535"),
        ("127.0.0.1:0", "not a number in 1..65535"),
        ("127.0.0.1", "expected host:port"),
        ("::1:7001", "in brackets"),
    ],
)
def test_bad_address(tmp_path: Path, address: str, problem: str) -> None:
    message = config_error(tmp_path, ONE_MEMBER.replace("127.0.0.1:7001", address))
    assert f"cluster.members[0].grpc_address: '{address}': " in message
    assert problem in message


def test_split_host_port() -> None:
    assert split_host_port("[::1]:50051") == ("::1", 50051)
    assert split_host_port("node-1.example:443") == ("node-1.example", 443)


def test_wildcard_address_in_a_multi_member_cluster(tmp_path: Path) -> None:
    text = '[node]\nid = "a"\n[cluster]\nsecret = "x"\n' + THREE_MEMBERS.replace(
        "127.0.0.1:7101", "0.0.0.0:7101"
    )
    assert "cluster.members[0].raft_address: '0.0.0.0:7101': a wildcard host" in config_error(tmp_path, text)


def test_worker_heartbeat_not_below_half_the_lease_ttl(tmp_path: Path) -> None:
    text = ONE_MEMBER + "[scheduler]\nlease_ttl_ms = 4000\nheartbeat_interval_ms = 2000\n"
    message = config_error(tmp_path, text)
    assert "scheduler.heartbeat_interval_ms: 2000 must be less than half of scheduler.lease_ttl_ms" in message
    assert "at most 1999" in message


def test_raft_heartbeat_not_below_half_the_election_timeout(tmp_path: Path) -> None:
    message = config_error(tmp_path, ONE_MEMBER + "[raft]\nelection_timeout_ms = 300\nheartbeat_ms = 150\n")
    assert "raft.heartbeat_ms: 150 must be less than half of raft.election_timeout_ms" in message


def test_election_timeout_too_small(tmp_path: Path) -> None:
    message = config_error(tmp_path, ONE_MEMBER + "[raft]\nelection_timeout_ms = 100\nheartbeat_ms = 10\n")
    assert "raft.election_timeout_ms: 100 is too small: set it to at least 200" in message


@pytest.mark.parametrize("value", ['"1000"', "true", "1.5"])
def test_integer_type(tmp_path: Path, value: str) -> None:
    message = config_error(tmp_path, ONE_MEMBER + f"[scheduler]\nhorizon_ms = {value}\n")
    assert "scheduler.horizon_ms: expected an integer (milliseconds)" in message


def test_payload_limit(tmp_path: Path) -> None:
    message = config_error(tmp_path, ONE_MEMBER + "[scheduler]\nmax_payload_bytes = 10000000\n")
    assert "scheduler.max_payload_bytes: 10000000 is too large" in message


def test_bad_choice(tmp_path: Path) -> None:
    message = config_error(tmp_path, ONE_MEMBER + '[log]\nlevel = "INFO"\n')
    assert "log.level: 'INFO' (a string) is not allowed; use one of" in message
    message = config_error(tmp_path, ONE_MEMBER + '[cluster]\ndurability = "always"\n')
    assert (
        'cluster.durability: \'always\' (a string) is not allowed; use one of "replicated" | "fsync"'
        in message
    )


def test_multi_node_without_secret(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[node]\nid = "a"\n' + THREE_MEMBERS)
    assert "cluster.secret: a cluster of 3 members needs a secret (set cluster.secret_env or" in message
    assert "pickled" in message


def test_secret_env_unset(tmp_path: Path) -> None:
    text = '[node]\nid = "a"\n[cluster]\nsecret_env = "CRONRAFT_TEST_SECRET"\n' + THREE_MEMBERS
    message = config_error(tmp_path, text, {})
    assert "cluster.secret_env: environment variable CRONRAFT_TEST_SECRET is unset or empty" in message
    assert "CRONRAFT_TEST_SECRET is unset" in config_error(tmp_path, text, {"CRONRAFT_TEST_SECRET": "  "})


def test_secret_env_on_a_single_node_is_still_resolved(tmp_path: Path) -> None:
    text = ONE_MEMBER.replace("[[", '[cluster]\nsecret_env = "S"\n\n[[', 1)
    assert "cluster.secret_env: environment variable S" in config_error(tmp_path, text, {})


def test_secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = '[node]\nid = "a"\n[cluster]\nsecret_file = "secret.txt"\n' + THREE_MEMBERS
    assert "cluster.secret_file: cannot read " in config_error(tmp_path, text)
    (tmp_path / "secret.txt").write_text("")
    (tmp_path / "secret.txt").chmod(0o644)  # a secret others may read is refused (issue 13)
    assert "may be read by group or others (mode 644); run `chmod 600 " in config_error(tmp_path, text)
    (tmp_path / "secret.txt").chmod(0o600)
    assert "cluster.secret_file: " in config_error(tmp_path, text)
    (tmp_path / "secret.txt").write_text("from-file-0123456789\n")
    cluster = load_text(tmp_path, text).cluster
    assert (cluster.secret, cluster.secret_source) == (
        "from-file-0123456789",
        f"file:{tmp_path / 'secret.txt'}",
    )


def test_only_one_secret_source(tmp_path: Path) -> None:
    text = '[node]\nid = "a"\n[cluster]\nsecret = "x"\nsecret_file = "f"\n' + THREE_MEMBERS
    assert "cluster.secret: set only one of cluster.secret_file, cluster.secret" in config_error(
        tmp_path, text
    )


def test_missing_members(tmp_path: Path) -> None:
    assert "cluster.members: missing; add one [[cluster.members]]" in config_error(
        tmp_path, '[node]\nid = "a"\n'
    )


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    assert "not valid TOML" in config_error(tmp_path, "[node\n")
    with pytest.raises(ConfigError, match=r"nope\.toml: file not found"):
        load_config(tmp_path / "nope.toml")


def test_the_staging_lead_must_fit_in_half_the_horizon(tmp_path: Path) -> None:
    message = config_error(tmp_path, ONE_MEMBER + "[scheduler]\nhorizon_ms = 8000\nstage_lead_ms = 5000\n")
    assert "scheduler.stage_lead_ms: 5000 must be at most half of scheduler.horizon_ms (8000)" in message
    assert "at most 4000" in message
    # Unset, it follows a shorter horizon instead of refusing it.
    short = load_text(tmp_path, ONE_MEMBER + "[scheduler]\nhorizon_ms = 5000\n")
    assert short.scheduler.stage_lead_ms == 2500
    message = config_error(tmp_path, ONE_MEMBER + "[scheduler]\nfire_lead_ms = 6000\n")
    assert "scheduler.fire_lead_ms: 6000 is too large" in message
