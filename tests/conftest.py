"""Fixtures shared by every test tier. Keep this small: a fixture used by one module belongs there."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's top folder (the one holding pyproject.toml)."""
    return REPO_ROOT


@pytest.fixture(autouse=True)
def _keep_umask() -> Iterator[None]:
    """A node claiming its data directory sets the process umask to 077 (daemon.datadir): in-process
    nodes of one test must not change the modes of the files later tests create."""
    before = os.umask(0o022)
    os.umask(before)
    yield
    os.umask(before)
