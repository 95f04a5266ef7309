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


@pytest.fixture(scope="module")
def module_clusters() -> Iterator[list[Cluster]]:
    """The clusters a module's tests share (append them, then start them): stopped after its last test.
    Starting a cluster costs 3-8 s of the default run, so tests that leave it as they found it share one:
    no node killed, paused or restarted, no worker stopped, their own task names, and nothing asserted
    about what the whole cluster holds. A test that breaks a node makes its own cluster."""
    made: list[Cluster] = []
    yield made
    for c in made:
        c.stop()


@pytest.fixture
def module_cluster_logs(
    request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str], module_clusters: list[Cluster]
) -> Iterator[None]:
    """Prints the logs of the module's shared clusters after a test that failed (use it with them)."""
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before:
        with capsys.disabled():
            for c in module_clusters:
                print(c.logs())
