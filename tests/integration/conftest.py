"""Fixtures shared by the real-process tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import Cluster


@pytest.fixture
def clusters(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> Iterator[list[Cluster]]:
    """The clusters a test makes (append them): stopped at the end, their logs printed if it failed."""
    made: list[Cluster] = []
    failed_before = request.session.testsfailed
    yield made
    for c in made:
        c.stop()
    if request.session.testsfailed > failed_before:
        with capsys.disabled():
            for c in made:
                print(c.logs())
