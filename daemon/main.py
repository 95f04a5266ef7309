"""`schedd`: run one Cronraft node. `schedd --config FILE`; without --config, the embedded default
(a single node, data under ./data, gRPC on 127.0.0.1:50051). `schedd restore FILE --config FILE` seeds a
new node's data directory from a backup instead (daemon.restore)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys

import structlog

from cronraft.daemon import logging_setup
from cronraft.daemon.config import Config, default_config, load_config
from cronraft.errors import ConfigError, CronraftError

GC_THRESHOLD = 50_000  # allocations between two young-generation collections (CPython's default: 700)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="schedd",
        description="Run one Cronraft scheduler node.",
        epilog="schedd restore FILE --config FILE: seed a new node's data directory from a backup "
        "(schedd restore --help).",
    )
    p.add_argument("--config", help="TOML config file (default: the embedded single-node config)")
    p.add_argument(
        "--join",
        action="store_true",
        help="join a running cluster: with an empty data directory, start as a learner (catch up, no vote) "
        "until `schedctl cluster add-node` adds this node; the config lists the current members and this "
        "node (docs/operations.md, Membership changes)",
    )
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="override log.level")
    p.add_argument("--log-format", choices=["console", "json"], help="override log.format")
    return p.parse_args(argv)


async def _serve(config: Config, *, join: bool = False) -> None:
    from cronraft.daemon.node import Node

    node = Node(config, join=join)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, node.security.reload)  # re-read the token file
    await node.start()
    # What startup allocated (modules, config, the node's long-lived objects) is never garbage: frozen,
    # the cyclic collector no longer walks it. Collections of the young generation run every
    # GC_THRESHOLD allocations instead of 700: request handling allocates short-lived objects by the
    # thousand, and each default collection was a pause in the middle of a create's path (W2's tail).
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)
    try:
        await stop.wait()
    finally:
        structlog.get_logger("cronraft").info("shutting down")
        await node.stop()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["restore"]:
        from cronraft.daemon import restore

        return restore.main(argv[1:])
    args = _parse(argv)
    try:
        config = load_config(args.config) if args.config else default_config()
    except ConfigError as e:
        print(f"schedd: config error: {e}", file=sys.stderr)
        return 2
    logging_setup.configure(args.log_level or config.log.level, args.log_format or config.log.format)
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(config, join=args.join))
    except ConfigError as e:
        print(f"schedd: config error: {e}", file=sys.stderr)
        return 2
    except CronraftError as e:
        print(f"schedd: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
