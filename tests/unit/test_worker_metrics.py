"""The worker's Prometheus metrics (client.worker.metrics; `schedworker --metrics-address`)."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

import pytest
from fake_gateway import (
    WAIT_S,
    connected_stream,
    fake_leader,
    get,
    make_lease,
    offers,
    running_worker,
    worker_config,
)
from prometheus_client import CollectorRegistry

from cronraft.client.worker import cli
from cronraft.client.worker.cli import build_parser, main
from cronraft.client.worker.metrics import WorkerMetrics, outcome_name, parse_address
from cronraft.errors import ConfigError
from cronraft.proto.v1 import common_pb2
from tests.support.wait import wait_until_async

PY = sys.executable


def sample(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    value = registry.get_sample_value(name, labels or {})
    assert value is not None, f"no sample {name}{labels or ''}"
    return value


def test_outcome_names_and_addresses() -> None:
    assert outcome_name(common_pb2.ATTEMPT_TIMED_OUT) == "timed_out"
    assert outcome_name(common_pb2.ATTEMPT_NOT_STARTED) == "not_started"
    assert outcome_name(999) == "unspecified"
    assert parse_address("127.0.0.1:9470") == ("127.0.0.1", 9470)
    assert parse_address("[::1]:0") == ("::1", 0)
    for bad in ("9470", "host:", ":80", "h:99999", "h:x"):
        with pytest.raises(ConfigError, match="--metrics-address"):
            parse_address(bad)


def test_a_malformed_metrics_address_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "configure_logging", lambda *a: None)  # keep structlog's set-up as it is
    assert build_parser().parse_args(["--metrics-address", "127.0.0.1:1"]).metrics_address == "127.0.0.1:1"
    with pytest.raises(SystemExit) as e:
        main(["--metrics-address", "nowhere"])
    assert e.value.code == 2
    assert "--metrics-address: 'nowhere': expected HOST:PORT" in capsys.readouterr().err


@pytest.mark.asyncio
async def test_attempts_start_delay_results_and_backlog_are_counted_and_served(tmp_path: Path) -> None:
    metrics = WorkerMetrics()
    reg = metrics.registry
    async with fake_leader() as leader:
        config = worker_config([leader.address], tmp_path)
        async with running_worker(config, metrics=metrics) as worker:
            stream = await connected_stream(leader)
            await wait_until_async(worker.connected.is_set, WAIT_S, "the worker welcomed")
            assert sample(reg, "cronraft_worker_connected") == 1
            assert sample(reg, "cronraft_worker_capacity_slots") == 3
            assert sample(reg, "cronraft_worker_info", {"worker": "w-test"}) == 1
            stream.put_nowait(offers(make_lease("ok", argv=[PY, "-c", "pass"])))
            stream.put_nowait(offers(make_lease("bad", argv=[PY, "-c", "raise SystemExit(3)"], token=(1, 2))))
            got = {(await get(leader.results)).execution_id for _ in range(2)}  # in either order
            assert got == {"ok", "bad"}

            def acknowledged() -> bool:
                return (
                    sample(reg, "cronraft_worker_results_acknowledged_total") == 2 and len(worker.outbox) == 0
                )

            await wait_until_async(acknowledged, WAIT_S, "both results acknowledged")
            assert sample(reg, "cronraft_worker_attempts_total", {"outcome": "succeeded"}) == 1
            assert sample(reg, "cronraft_worker_attempts_total", {"outcome": "failed"}) == 1
            assert sample(reg, "cronraft_worker_attempts_total", {"outcome": "timed_out"}) == 0
            assert sample(reg, "cronraft_worker_start_delay_seconds_count") == 2
            assert sample(reg, "cronraft_worker_results_sent_total") >= 2
            assert sample(reg, "cronraft_worker_attempts_running") == 0
            assert sample(reg, "cronraft_worker_outbox_results") == 0

            endpoint = metrics.serve("127.0.0.1:0")
            try:
                url = f"http://127.0.0.1:{endpoint.port}/metrics"
                with urllib.request.urlopen(url, timeout=5) as resp:
                    text = resp.read().decode()
            finally:
                endpoint.stop()
            assert 'cronraft_worker_attempts_total{outcome="succeeded"} 1.0' in text
            assert "# TYPE cronraft_worker_start_delay_seconds histogram" in text


def test_two_workers_in_one_process_keep_their_own_registries() -> None:
    a, b = WorkerMetrics(), WorkerMetrics()
    a.attempt_finished(common_pb2.ATTEMPT_SUCCEEDED)
    assert sample(a.registry, "cronraft_worker_attempts_total", {"outcome": "succeeded"}) == 1
    assert sample(b.registry, "cronraft_worker_attempts_total", {"outcome": "succeeded"}) == 0
    assert b.registry.get_sample_value("cronraft_worker_attempts_running") is None  # no worker bound


def test_each_outcome_counts_on_its_own_counter_every_time() -> None:
    """attempt_finished finds each outcome's counter once and keeps it: later attempts still count, each
    on its own outcome's counter, and an outcome number without a name counts as unspecified."""
    metrics = WorkerMetrics()
    for outcome in (common_pb2.ATTEMPT_SUCCEEDED, common_pb2.ATTEMPT_SUCCEEDED, common_pb2.ATTEMPT_FAILED):
        metrics.attempt_finished(outcome)
    metrics.attempt_finished(999)
    metrics.attempt_finished(common_pb2.ATTEMPT_SUCCEEDED)
    counts = {
        name: sample(metrics.registry, "cronraft_worker_attempts_total", {"outcome": name})
        for name in ("succeeded", "failed", "timed_out", "unspecified")
    }
    assert counts == {"succeeded": 3, "failed": 1, "timed_out": 0, "unspecified": 1}
