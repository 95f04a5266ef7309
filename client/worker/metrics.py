"""The worker's Prometheus metrics (`schedworker --metrics-address HOST:PORT`; docs/monitoring.md).

`WorkerMetrics` holds a registry of its own (not prometheus_client's global one) and is handed to the
`Worker`, which tells it when an attempt starts and ends (`attempt_started`, `attempt_finished`); the
rest is read from the worker at scrape time: attempts running, the outbox's backlog, results sent and
acknowledged, whether a stream to the leader is open. `serve(address)` starts prometheus_client's own
small HTTP server (a thread) answering `GET /metrics`; it has no TLS and no authentication and shows
only counts (no task data): bind it to loopback or a monitoring network.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cronraft.errors import ConfigError
from cronraft.proto.v1 import common_pb2

if TYPE_CHECKING:
    from cronraft.client.worker.agent import Worker

# Seconds a payload began after the instant it was meant to (its lease's held start, else the offer).
START_DELAY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
OUTCOMES = ("succeeded", "failed", "timed_out", "cancelled", "not_started", "refused")


def outcome_name(outcome: int) -> str:
    """ATTEMPT_TIMED_OUT -> "timed_out"."""
    try:
        return common_pb2.AttemptOutcome.Name(outcome).lower().removeprefix("attempt_")  # type: ignore[arg-type]
    except ValueError:
        return "unspecified"


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT ([V6]:PORT) for --metrics-address; ConfigError naming the flag otherwise."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--metrics-address: {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9470")
    return host, int(port)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.attempts = Counter(
            "cronraft_worker_attempts",
            "Attempts this worker ended, by outcome (not_started: stopped before the payload began).",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in OUTCOMES:
            self.attempts.labels(outcome)
        # The counter of each outcome (AttemptOutcome number), found once: labels() takes a lock and
        # looks up its label values, and the outcome's name costs an enum lookup, per attempt.
        self._attempts_by_outcome: dict[int, Counter] = {}
        self.start_delay = Histogram(
            "cronraft_worker_start_delay_seconds",
            "How late a payload began after the instant it was meant to (its lease's held start, else "
            "the offer's arrival): the start gate, the confirmation heartbeat, a sensor excluded.",
            buckets=START_DELAY_BUCKETS,
            registry=self.registry,
        )
        self._worker: Worker | None = None
        self.registry.register(_WorkerCollector(self))

    def bind(self, worker: Worker) -> None:
        """The worker whose state the scrape reads (Worker does this when it is given these metrics)."""
        self._worker = worker

    @property
    def worker(self) -> Worker | None:
        return self._worker

    def attempt_started(self, delay_s: float) -> None:
        self.start_delay.observe(max(0.0, delay_s))

    def attempt_finished(self, outcome: int) -> None:
        counter = self._attempts_by_outcome.get(outcome)
        if counter is None:
            counter = self._attempts_by_outcome[outcome] = self.attempts.labels(outcome_name(outcome))
        counter.inc()

    def serve(self, address: str) -> MetricsEndpoint:
        """Start answering `GET /metrics` on `address` (HOST:PORT; port 0: a free one)."""
        host, port = parse_address(address)
        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            raise ConfigError(f"--metrics-address: cannot listen on {address}: {e.strerror or e}") from None
        return MetricsEndpoint(server, thread)


class MetricsEndpoint:
    """A running `serve`: its port, and `stop()`."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.port: int = server.server_address[1]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _WorkerCollector(Collector):
    """What the scrape reads from the worker (on the server's thread: counts and flags only)."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        worker = self._metrics.worker
        if worker is None:
            return
        info = GaugeMetricFamily("cronraft_worker_info", "This worker's id (always 1).", labels=["worker"])
        info.add_metric([worker.config.worker_id], 1)
        yield info
        yield GaugeMetricFamily(
            "cronraft_worker_attempts_running",
            "Attempts this worker holds now.",
            value=worker.attempts_running,
        )
        yield GaugeMetricFamily(
            "cronraft_worker_capacity_slots",
            "Attempts this worker runs at once (--capacity).",
            value=worker.config.capacity,
        )
        yield GaugeMetricFamily(
            "cronraft_worker_connected",
            "1 while a stream to the leader is open.",
            value=float(worker.connected.is_set()),
        )
        yield GaugeMetricFamily(
            "cronraft_worker_outbox_results",
            "Results stored in the outbox and not yet acknowledged by the cluster (the backlog).",
            value=len(worker.outbox),
        )
        yield CounterMetricFamily(
            "cronraft_worker_results_sent",
            "Results written to a stream to the leader (resends included).",
            value=worker.results_sent,
        )
        yield CounterMetricFamily(
            "cronraft_worker_results_acknowledged",
            "Results the cluster acknowledged (removed from the outbox).",
            value=worker.results_acknowledged,
        )


__all__ = ["MetricsEndpoint", "WorkerMetrics", "outcome_name", "parse_address"]
