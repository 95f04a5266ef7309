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


def test_claim_makes_the_data_directory_private(tmp_path: Path) -> None:
    """Issue 13: 0700 folders, no group/other bits on files, also for a directory made before the rule;
    files created after the claim are private by the umask."""
    data = tmp_path / "node1"
    (data / "state").mkdir(parents=True, mode=0o755)
    data.chmod(0o755)
    (data / "state" / "data.mdb").write_bytes(b"x")
    (data / "state" / "data.mdb").chmod(0o644)
    (data / IDENTITY_FILE).write_text("{}")
    config = default_config()
    config = replace(config, node=replace(config.node, data_dir=data))
    with pytest.raises(ConfigError):  # another identity; the modes are fixed first all the same
        claim(config)
    assert (data.stat().st_mode & 0o777, (data / "state").stat().st_mode & 0o777) == (0o700, 0o700)
    assert (data / "state" / "data.mdb").stat().st_mode & 0o777 == 0o600
    fresh = tmp_path / "fresh"
    claim(replace(config, node=replace(config.node, data_dir=fresh)))
    (fresh / "journal").write_bytes(b"")
    assert fresh.stat().st_mode & 0o777 == 0o700
    assert (fresh / IDENTITY_FILE).stat().st_mode & 0o777 == 0o600
    assert (fresh / "journal").stat().st_mode & 0o777 == 0o600
