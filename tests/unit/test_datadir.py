"""A data directory is claimed by one member of one cluster."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from cronraft.daemon.config import default_config
from cronraft.daemon.datadir import IDENTITY_FILE, claim
from cronraft.errors import ConfigError


def test_first_start_claims_and_later_starts_pass(tmp_path: Path) -> None:
    cfg = default_config()
    cfg = replace(cfg, node=replace(cfg.node, data_dir=tmp_path / "n1"))
    claim(cfg)
    assert (tmp_path / "n1" / IDENTITY_FILE).exists()
    (tmp_path / "n1" / "state").mkdir()
    claim(cfg)  # same member again: fine


def test_another_clusters_member_is_refused(tmp_path: Path) -> None:
    cfg = default_config()
    cfg = replace(cfg, node=replace(cfg.node, data_dir=tmp_path / "n1"))
    claim(cfg)
    member = replace(cfg.cluster.members[0], raft_address="127.0.0.1:59999")
    other = replace(cfg, cluster=replace(cfg.cluster, members=(member,)))
    with pytest.raises(ConfigError, match=r"node\.data_dir: .* belongs to member"):
        claim(other)


def test_a_non_empty_unclaimed_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "junk").write_text("x")
    cfg = default_config()
    cfg = replace(cfg, node=replace(cfg.node, data_dir=tmp_path))
    with pytest.raises(ConfigError, match="not empty"):
        claim(cfg)
