"""What every schedctl command shares: the exit codes and the error a usage mistake raises, the output
(a table or one JSON document), the `error:` lines, the confirmation of destructive commands, the
report of a bulk command, and the small argument checks (`--limit`, instants, KEY=VALUE pairs)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any, TypeVar

from cronraft.client import _parsing, _requests
from cronraft.errors import (
    CronraftError,
    DeadlineExceeded,
    InvalidArgument,
    NotLeader,
    OutcomeUnknown,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)

__all__ = [
    "EXIT_AUTH",
    "EXIT_OK",
    "EXIT_SERVER",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "Reported",
    "UsageError",
    "confirm",
    "emit",
    "exit_code_for",
    "limit_arg",
    "non_negative",
    "parse_pairs",
    "print_error",
    "report_bulk",
    "take",
    "when_arg",
]

EXIT_OK = 0
EXIT_SERVER = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_AUTH = 4  # UNAUTHENTICATED or PERMISSION_DENIED (docs/security.md)

_T = TypeVar("_T")


class UsageError(Exception):
    """Bad command line (exit code 2)."""


class Reported(Exception):
    """Errors already printed, one per item; carries the exit code of the worst of them."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def exit_code_for(error: CronraftError) -> int:
    """The exit code of an error of the SDK."""
    if isinstance(error, InvalidArgument):
        return EXIT_USAGE
    if isinstance(error, Unauthenticated | PermissionDenied):
        return EXIT_AUTH
    if isinstance(error, Unavailable | DeadlineExceeded | OutcomeUnknown | NotLeader):
        return EXIT_UNAVAILABLE
    return EXIT_SERVER


# ---------------------------------------------------------------------------------------------- output


def print_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def emit(args: argparse.Namespace, doc: Any, table: Callable[[], str]) -> None:
    """One JSON document (`--output json`, format in docs/cli.md), else the table `table()` makes."""
    if args.output == "json":
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        text = table()
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def report_bulk(result: _requests.BulkResult[Any]) -> None:
    """One `error:` line per failed id and per id not tried; raise the worst exit code, if any."""
    for item, exc in result.errors.items():
        print_error(f"{item}: {exc}")
    for item in result.skipped:
        print_error(f"{item}: not tried: the cluster is unreachable")
    codes = [exit_code_for(e) for e in result.errors.values()]
    if result.skipped:
        codes.append(EXIT_UNAVAILABLE)
    if codes:
        raise Reported(max(codes))


def confirm(args: argparse.Namespace, action: str) -> None:
    """Ask whether to do `action` on a terminal (on stderr, so that stdout stays one document) unless
    --yes; with no terminal, --yes is required (exit 2). Anything but y/yes aborts (exit 1)."""
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{action}: confirmation needed, but stdin is not a terminal: pass --yes")
    sys.stderr.write(f"{action}? [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        print_error("aborted: nothing was changed")
        raise Reported(EXIT_SERVER)


# ------------------------------------------------------------------------------------------- arguments


def when_arg(text: str | None, flag: str) -> int | None:
    """An RFC 3339 instant, "+DURATION" from now, or "now"; in Unix ms."""
    if text is None:
        return None
    return _parsing.parse_when(text, flag)


def limit_arg(value: int | None) -> int | None:
    """`--limit N`: at least 1, or None (not given)."""
    if value is not None and value < 1:
        raise InvalidArgument("--limit", f"must be at least 1, got {value}")
    return value


def take(items: Iterator[_T], limit: int | None) -> Iterator[_T]:
    return items if limit is None else islice(items, limit)


def parse_pairs(pairs: Iterable[str], flag: str) -> dict[str, str]:
    """KEY=VALUE flags (`--tag`, `--worker-label`) as a dict; the last one of a key wins."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidArgument(flag, f"expected KEY=VALUE, got {pair!r}")
        out[key] = value  # not stripped: a tag value is stored as typed
    return out


def non_negative(value: int, flag: str) -> int:
    if value < 0:
        raise InvalidArgument(flag, f"must not be negative, got {value}")
    return value
