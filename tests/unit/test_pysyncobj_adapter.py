"""raft.pysyncobj_adapter: the version it was checked against is the one pyproject.toml pins.

The adapter reaches into pysyncobj's private attributes (docs/architecture.md, "Replication"), which any
release may rename: bumping the pin without re-checking them must fail here first.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from cronraft.raft import pysyncobj_adapter

ROOT = Path(__file__).resolve().parents[2]


def test_the_adapter_is_checked_against_the_pinned_pysyncobj() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [m.group(1) for d in deps if (m := re.fullmatch(r"\s*pysyncobj\s*==\s*(\S+)\s*", d))]
    assert pins == [pysyncobj_adapter.PINNED_VERSION]


def test_the_installed_pysyncobj_is_the_pinned_one() -> None:
    assert pysyncobj_adapter.version_problem() is None
