"""`schedworker`: its flags, the `WorkerConfig` they make, logging set-up, and `main`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import prometheus_client
import structlog

from cronraft.client import _argnames
from cronraft.client import handlers as _handlers
from cronraft.client._policy import WorkerPolicy, load_policy
from cronraft.client._runner import DEFAULT_KILL_GRACE_S
from cronraft.client._transport import add_transport_arguments, transport_from_args
from cronraft.client.worker.agent import Worker
from cronraft.client.worker.config import DEFAULT_SERVER, WorkerConfig, process_identity
from cronraft.client.worker.metrics import WorkerMetrics, parse_address
from cronraft.errors import ConfigError, InvalidArgument
from cronraft.timefmt import seconds_arg

parse_duration = seconds_arg  # --kill-grace, --shutdown-grace: the one grammar; a bare number is seconds
_GC_THRESHOLD = 50_000  # allocations between two young-generation collections (CPython's default: 700)


def _parse_label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"invalid label {text!r}: use KEY=VALUE")
    return key, value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="schedworker",
        description="Cronraft worker: runs the attempts the leader leases to it.",
    )
    parser.add_argument(
        "--server",
        action="append",
        metavar="HOST:PORT[,HOST:PORT...]",
        help=f"cluster node(s) to connect to (default: $CRONRAFT_SERVER or {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--id",
        dest="worker_id",
        help="worker id (default: HOSTNAME-PID; set it to keep the same outbox across restarts)",
    )
    parser.add_argument("--capacity", type=_positive_int, default=4, help="attempts run at once (default 4)")
    parser.add_argument(
        "--queue", dest="queues", action="append", metavar="Q", help="queue to take work from (repeatable)"
    )
    # --worker-label, the flag `schedctl task create` requires labels with (one name on both, issue 19).
    label = parser.add_argument(
        "--worker-label",
        dest="labels",
        action="append",
        type=_parse_label,
        metavar=_argnames.KEY_VALUE,
        help="a label of this worker, which tasks can require (repeatable)",
    )
    _argnames.add_alias(parser, "--label", label)
    parser.add_argument(
        "--outbox-dir", type=Path, help="durable result outbox (default ./data/worker-<id>/outbox)"
    )
    parser.add_argument(
        "--kill-grace",
        type=parse_duration,
        default=DEFAULT_KILL_GRACE_S,
        metavar="DURATION",
        help="time between SIGTERM and SIGKILL when an attempt is stopped (default 5s)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=parse_duration,
        default=10.0,
        metavar="DURATION",
        help="on SIGTERM/SIGINT, how long running attempts may continue before they are killed (default 10s)",
    )
    parser.add_argument(
        "--handlers",
        dest="handler_modules",
        action="append",
        metavar="MODULE",
        help="import MODULE, whose @cronraft.client.handlers.handler functions this worker then serves "
        "(repeatable; the current directory is on the import path)",
    )
    parser.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="the worker's policy (TOML): payload kinds, executables, environment, run_as, limits, HTTP "
        "egress, secrets (docs/operations.md, 'Worker policy'); default: the secure defaults",
    )
    parser.add_argument(
        "--allow-shell",
        action="store_true",
        help="also run shell payloads (off by default: a shell payload runs whatever its task says)",
    )
    parser.add_argument(
        "--allow-http-loopback",
        action="store_true",
        help="let HTTP payloads reach loopback addresses (127.0.0.0/8, ::1); refused by default",
    )
    parser.add_argument(
        "--metrics-address",
        metavar="HOST:PORT",
        help="serve Prometheus metrics (GET /metrics, no TLS, no authentication) on this address, e.g. "
        "127.0.0.1:9470 (default: off; docs/monitoring.md)",
    )
    parser.add_argument("--log-format", choices=["console", "json"], default="console")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    add_transport_arguments(parser)
    return parser


def config_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> WorkerConfig:
    env = os.environ if environ is None else environ
    raw_servers = args.server or [env.get("CRONRAFT_SERVER") or DEFAULT_SERVER]
    servers = tuple(s.strip() for item in raw_servers for s in item.split(",") if s.strip())
    worker_id = args.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    outbox_dir = args.outbox_dir or Path("data") / f"worker-{worker_id}" / "outbox"
    return WorkerConfig(
        servers=servers,
        worker_id=worker_id,
        outbox_dir=outbox_dir,
        capacity=args.capacity,
        queues=tuple(args.queues or ("default",)),
        labels=dict(args.labels or ()),
        kill_grace_s=args.kill_grace,
        shutdown_grace_s=args.shutdown_grace,
        policy=policy_from_args(args),
        transport=transport_from_args(args, env),
    )


def policy_from_args(args: argparse.Namespace) -> WorkerPolicy:
    """--policy FILE (or the defaults), with what --allow-shell and --allow-http-loopback add."""
    path = getattr(args, "policy", None)
    policy = load_policy(path) if path is not None else WorkerPolicy()
    if getattr(args, "allow_shell", False):
        policy = dataclasses.replace(policy, kinds=policy.kinds | {"shell"})
    if getattr(args, "allow_http_loopback", False):
        policy = dataclasses.replace(policy, http=dataclasses.replace(policy.http, allow_loopback=True))
    return policy


def configure_logging(log_format: str, level: str = "info") -> None:
    """structlog to stderr, human-readable or one JSON object per line."""
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if log_format == "json":
        processors += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    else:
        processors += [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


async def _amain(config: WorkerConfig, metrics_address: str | None = None) -> None:
    if metrics_address:
        # No `_created` series (a process-wide setting, so only here, never in the library's Worker).
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    metrics = WorkerMetrics() if metrics_address else None
    worker = Worker(config, metrics=metrics)
    endpoint = metrics.serve(metrics_address) if metrics is not None and metrics_address else None
    if endpoint is not None:
        structlog.get_logger("cronraft.client.worker").info("metrics endpoint listening", port=endpoint.port)
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        worker.stop(immediate=signals > 1)  # a second signal skips the grace

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await worker.run()
    finally:
        if endpoint is not None:
            endpoint.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_format, args.log_level)
    try:
        config = config_from_args(args)
        if args.metrics_address:
            parse_address(args.metrics_address)  # a malformed address is a usage error, before anything runs
        process_identity(config.policy)  # an unknown run_as user is a start-up error, not an attempt's
    except (ConfigError, InvalidArgument) as exc:  # InvalidArgument: the transport flags
        parser.error(str(exc))
    try:
        _handlers.import_handler_modules(args.handler_modules or ())
    except Exception as exc:  # ImportError, or whatever the module raised while loading
        parser.error(f"--handlers: cannot import handlers: {type(exc).__name__}: {exc}")
    # A busy worker keeps thousands of attempts alive (tasks, futures, leases, buffers); with CPython's
    # default thresholds the cyclic GC walks them all every few thousand allocations. Measured with
    # 10,000 concurrent no-op handler attempts: 90-100 -> 46-51 us of CPU per attempt. What startup
    # allocated is frozen (never scanned again), and collections run about 70 times less often.
    gc.freeze()
    gc.set_threshold(_GC_THRESHOLD, 20, 20)
    # The stock asyncio loop, not uvloop: uvloop spawns children with fork(), and a fork() while
    # gRPC's threads run crashed payload children with SIGSEGV before exec (seen as exit 139).
    # CPython's subprocess uses vfork()/exec on Linux, which does not run gRPC's fork handlers.
    with asyncio.Runner() as runner:
        runner.run(_amain(config, args.metrics_address))
    return 0
