"""Fixtures shared by the real-process tests."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import pytest

from tests.support.cluster import ProcessCluster

from .harness import Cluster


@pytest.fixture
def clusters() -> Iterator[list[Cluster]]:
    """The clusters a test makes (append them): stopped at the end (a failed test's report carries
    their logs: pytest_runtest_makereport below)."""
    made: list[Cluster] = []
    yield made
    for c in made:
        c.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """A test that failed (or whose fixture failed) carries the logs of every cluster still in use in
    this process, its own and its module's, as sections of its report: pytest-xdist sends report
    sections back to the main process, where output printed by a worker's fixture is lost."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        for table in ProcessCluster.in_use():
            report.sections.append((f"logs of the cluster in {table.root}", table.logs()))


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
