"""structlog set-up for the daemon and the worker: console for people, JSON for machines.

Every record carries wall time and monotonic milliseconds (`mono_ms`): the fault harness orders events
across processes by wall time and measures intervals within one process by monotonic time.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any

import structlog


def _add_mono(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event["mono_ms"] = time.monotonic_ns() // 1_000_000
    return event


def configure(level: str = "info", fmt: str = "console") -> None:
    lvl = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=lvl, stream=sys.stderr, format="%(message)s")
    # pysyncobj logs through the standard library; keep it at warning unless debugging.
    logging.getLogger("pysyncobj").setLevel(logging.DEBUG if lvl <= logging.DEBUG else logging.WARNING)
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_mono,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


__all__ = ["configure"]
