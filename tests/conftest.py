"""Fixtures shared by every test tier. Keep this small: a fixture used by one module belongs there."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's top folder (the one holding pyproject.toml)."""
    return REPO_ROOT
