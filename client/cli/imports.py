"""`schedctl task import FILE|-`: create tasks from a JSON Lines file through the bulk API.

Each non-blank line is one task: a task object as `schedctl task get --output json` prints it, or its
`spec` object alone (docs/cli.md, "Import format"). Lines are read lazily and sent in batches; each
batch is created whole or not at all. A progress line goes to stderr (rewritten in place on a
terminal, at most one line per 10 s otherwise); the summary goes to stdout (a table, or one JSON
document with `--output json`). The import id is printed: running the same file again with
`--import-id ID` creates only the batches that are still missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

from cronraft.client import _bulk, _requests
from cronraft.client._spec_json import task_spec_from_json_line
from cronraft.client.sdk import Client
from cronraft.errors import CronraftError
from cronraft.proto.v1 import common_pb2

__all__ = ["add_import_parser", "run_import"]

_QUIET_INTERVAL_S = 10.0


def add_import_parser(task_commands: Any, parent: argparse.ArgumentParser) -> argparse.ArgumentParser:
    imp: argparse.ArgumentParser = task_commands.add_parser(
        "import",
        parents=[parent],
        help="create many tasks from a JSON Lines file (bulk API)",
        description="Create one task per line of FILE (`-`: standard input). A line is a task object as "
        "`task get --output json` prints it, or its `spec` object alone. Batches are created whole or not "
        "at all; re-running with --import-id creates only what is missing.",
        epilog="Examples:\n"
        "  schedctl task import tasks.jsonl\n"
        "  schedctl task list -o json | jq -c '.[]' > tasks.jsonl\n"
        "  schedctl task import tasks.jsonl --import-id 5f1c2a --quiet",
    )
    imp.add_argument("file", metavar="FILE", help="JSON Lines file, or - for standard input")
    imp.add_argument(
        "--batch-size",
        type=int,
        default=_bulk.MAX_BATCH,
        metavar="N",
        help=f"specs per batch (1..{_bulk.MAX_BATCH}, default {_bulk.MAX_BATCH})",
    )
    imp.add_argument(
        "--import-id",
        default=None,
        metavar="ID",
        help="the id of this import (default: a new one); reuse it to resume an interrupted import",
    )
    imp.add_argument("--quiet", "-q", action="store_true", help="no progress line")
    return imp


class _Progress:
    def __init__(self, out: IO[str], quiet: bool) -> None:
        self.out = out
        self.quiet = quiet
        self.tty = out.isatty()
        self.started = time.monotonic()
        self.last = 0.0
        self.shown = False

    def update(self, result: _bulk.ImportResult) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if not self.tty and now - self.last < _QUIET_INTERVAL_S:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        text = f"imported {result.total:,} tasks ({result.total / elapsed:,.0f}/s)"
        self.out.write(f"\r{text}" if self.tty else f"{text}\n")
        self.out.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown and self.tty:
            self.out.write("\n")
            self.out.flush()


def _specs(lines: IO[str]) -> Iterator[common_pb2.TaskSpec]:
    for number, line in enumerate(lines, 1):
        if line.strip():
            yield task_spec_from_json_line(line, f"line {number}")


def summary_json(result: _bulk.ImportResult, seconds: float) -> dict[str, Any]:
    return {
        "import_id": result.import_id,
        "created": result.created,
        "replayed": result.replayed,
        "total": result.total,
        "retries": result.retries,
        "seconds": round(seconds, 3),
        "tasks_per_second": round(result.total / seconds, 1) if seconds > 0 else None,
        "batches": [
            {
                "request_id": b.request_id,
                "first_task_id": b.first_task_id,
                "count": b.count,
                "replayed": b.replayed,
            }
            for b in result.batches
        ],
    }


def summary_text(result: _bulk.ImportResult, seconds: float) -> str:
    rate = f" ({result.total / seconds:,.0f} tasks/s)" if seconds > 0 else ""
    lines = [
        f"imported {result.total:,} tasks in {seconds:.1f} s{rate}: {result.created:,} created, "
        f"{result.replayed:,} found already created"
        + (f" ({result.retries} calls retried)" if result.retries else ""),
        f"import id: {result.import_id}",
    ]
    if result.batches:
        last = result.batches[-1]
        last_id = _bulk.batch_ids(last.first_task_id, last.count)[-1]
        lines.append(
            f"task ids: {result.batches[0].first_task_id} .. {last_id} "
            f"({len(result.batches)} batches of consecutive ids)"
        )
    return "\n".join(lines)


def run_import(client: Client, args: argparse.Namespace) -> None:
    import_id = args.import_id or _requests.new_request_id()
    progress = _Progress(sys.stderr, args.quiet)
    seen: list[_bulk.ImportResult] = []

    def on_progress(result: _bulk.ImportResult) -> None:
        seen[:] = [result]
        progress.update(result)

    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        try:
            source: IO[str] = (
                sys.stdin if args.file == "-" else stack.enter_context(open(args.file, encoding="utf-8"))
            )
            result = client.import_tasks(
                _specs(source), batch_size=args.batch_size, import_id=import_id, on_progress=on_progress
            )
        except (CronraftError, OSError, UnicodeDecodeError) as e:
            progress.done()
            done = seen[0].total if seen else 0
            if done:
                print(
                    f"error: stopped after {done:,} tasks were imported (the batches before the error stay "
                    f"created); run again with --import-id {import_id} to create only the rest",
                    file=sys.stderr,
                )
            if isinstance(e, CronraftError):
                raise
            raise CronraftError(f"cannot read {args.file}: {e}") from None
    progress.done()
    seconds = time.monotonic() - started
    if args.output == "json":
        sys.stdout.write(json.dumps(summary_json(result, seconds), indent=2) + "\n")
    else:
        sys.stdout.write(summary_text(result, seconds) + "\n")
