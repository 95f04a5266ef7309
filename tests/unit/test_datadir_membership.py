"""The data directory's identity follows membership changes (daemon.datadir): a node starts after a
committed change whatever list its config names, as long as this cluster had it; a joining node is
recorded as such; a removed one and another cluster's directory are refused."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cronraft.daemon.clusterid import read_cluster_id
from cronraft.daemon.config import Config, default_config
from cronraft.daemon.config.model import Member
from cronraft.daemon.datadir import IDENTITY_FILE, JOINING, MEMBER, REMOVED, claim, record_membership
from cronraft.errors import ConfigError


def m(n: int) -> Member:
    return Member(f"node{n}", f"127.0.0.1:{50050 + n}", f"127.0.0.1:{7000 + n}")


def config(tmp_path: Path, node: int, *members: int) -> Config:
    cfg = default_config()
    return replace(
        cfg,
        node=replace(cfg.node, id=f"node{node}", data_dir=tmp_path / f"node{node}"),
        cluster=replace(cfg.cluster, members=tuple(m(i) for i in members)),
    )


def record(tmp_path: Path, node: int) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((tmp_path / f"node{node}" / IDENTITY_FILE).read_text())
    return loaded


def test_a_committed_change_is_recorded_and_any_list_the_cluster_had_is_accepted(tmp_path: Path) -> None:
    founding = config(tmp_path, 1, 1, 2, 3)
    first = claim(founding)
    assert (first.members, first.state, first.version) == (founding.cluster.members, MEMBER, 0)
    cluster_id = read_cluster_id(founding.node.data_dir)
    record_membership(founding, [m(1), m(2), m(3), m(4)], version=2, state=MEMBER)
    record_membership(founding, [m(1), m(3), m(4)], version=4, state=MEMBER)
    for listed in ((1, 2, 3), (1, 2, 3, 4), (1, 3, 4)):  # the config may name any of them
        got = claim(config(tmp_path, 1, *listed))
        assert (got.members, got.version) == ((m(1), m(3), m(4)), 4), listed
    assert read_cluster_id(founding.node.data_dir) == cluster_id  # the founders identify the cluster
    with pytest.raises(ConfigError, match="belongs to member 'node1' of a cluster with members"):
        claim(config(tmp_path, 1, 1, 5, 6))  # a list this cluster never had: another cluster's directory


def test_a_joining_node_is_recorded_and_then_takes_the_founders(tmp_path: Path) -> None:
    joining = config(tmp_path, 4, 1, 2, 3, 4)
    got = claim(joining, join=True)
    assert (got.state, got.members) == (JOINING, joining.cluster.members)
    assert claim(joining).state == JOINING  # restarted before it was added: still joining
    founders = config(tmp_path, 1, 1, 2, 3)
    claim(founders)
    record_membership(
        joining, [m(1), m(2), m(3), m(4)], version=2, state=MEMBER, founders=founders.cluster.members
    )
    assert record(tmp_path, 4)["members"] == record(tmp_path, 1)["members"]
    assert read_cluster_id(joining.node.data_dir) == read_cluster_id(founders.node.data_dir)
    assert claim(joining, join=True).state == MEMBER  # --join on a member's directory: ignored


def test_a_removed_member_is_refused_until_it_joins_afresh(tmp_path: Path) -> None:
    cfg = config(tmp_path, 2, 1, 2, 3)
    claim(cfg)
    record_membership(cfg, [m(1), m(3)], version=2, state=REMOVED)
    with pytest.raises(
        ConfigError, match=r"'node2' was removed from its cluster .* empty node\.data_dir and --join"
    ):
        claim(cfg)
