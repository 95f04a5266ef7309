"""The task flags of `schedctl task create` and `task update` (besides the schedule flags, which live in
`schedule_flags.add_schedule_arguments`): the argparse groups. `spec_args` reads them into a payload and
spec changes.

Every flag defaults to None or an empty list ("not given"), so that an update changes only what was
given.
"""

from __future__ import annotations

import argparse
from typing import Any

from cronraft.client import _argnames
from cronraft.client.cli import schedule_flags

__all__ = ["PAYLOAD_FLAGS", "add_spec_arguments"]

PAYLOAD_FLAGS = "-- ARGV, --shell -- SCRIPT, --http-url URL or --handler NAME"


def add_spec_arguments(parser: argparse.ArgumentParser, *, update: bool) -> None:
    """The flags of `task create`, shared by `task update` where every one is optional and means
    "unchanged" when absent; `spec_args.spec_changes` and `payload_from_args` read them. They are shown in
    help groups (task, schedule, payload, run policy, retries, notifications, placement, retention); the
    old spellings of issue 19's naming scheme stay as deprecated aliases (`_argnames.add_alias`)."""
    task = parser.add_argument_group("task")
    task.add_argument("--name", required=not update, help="task name")
    tag_help = "set a tag (repeatable)" if update else "a tag (repeatable)"
    task.add_argument(
        "--tag",
        action="append",
        default=[],
        type=_argnames.key_value("--tag"),
        metavar=_argnames.KEY_VALUE,
        help=tag_help,
    )
    if update:
        _clear(
            task,
            "--clear-tag",
            dest="remove_tag",
            text="remove a tag (repeatable)",
            old="--remove-tag",
            key=True,
        )
    schedule_flags.add_schedule_arguments(parser, required=not update)
    _payload_arguments(parser)
    _run_policy_arguments(parser)
    _retry_arguments(parser, update=update)
    _notify_arguments(parser, update=update)
    _placement_arguments(parser, update=update)
    _retention_arguments(parser, update=update)
    parser.add_argument("--request-id", default=None, help=argparse.SUPPRESS)
    parser.add_argument("argv", nargs="*", help=argparse.SUPPRESS)


def _clear(group: Any, flag: str, *, dest: str, text: str, old: str, key: bool = False) -> None:
    """A `--clear-X` flag, with its old spelling kept as a deprecated alias: with `key`, a repeatable
    `--clear-X KEY` removing one key of a map; else one that drops a whole setting."""
    if key:
        action = group.add_argument(flag, dest=dest, action="append", default=[], metavar="KEY", help=text)
    else:
        action = group.add_argument(flag, dest=dest, action="store_true", help=text)
    _argnames.add_alias(group, old, action)


def _payload_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(f"payload (exactly one: {PAYLOAD_FLAGS})")
    group.add_argument("--shell", action="store_true", help="run the one argument after -- with /bin/sh -c")
    group.add_argument("--http-url", metavar="URL", help="payload: an HTTP request to URL (http/https)")
    group.add_argument("--http-method", metavar="METHOD", help="HTTP method (default GET)")
    group.add_argument(
        "--http-header",
        action="append",
        default=[],
        type=_argnames.key_value("--http-header", "=:"),
        metavar=_argnames.KEY_VALUE,
        help="a request header (repeatable; KEY:VALUE also accepted)",
    )
    group.add_argument("--http-body", metavar="TEXT|@FILE", help="request body; @FILE reads a file, @- stdin")
    group.add_argument(
        "--http-expect",
        action="append",
        default=[],
        metavar="STATUS",
        help="a status that counts as success (repeatable, or 200,204; default: any 2xx)",
    )
    group.add_argument(
        "--handler",
        dest="handler_name",
        metavar="NAME",
        help="payload: the worker's handler registered as NAME",
    )
    group.add_argument(
        "--handler-args", metavar="JSON", help="the handler's keyword arguments, a JSON object"
    )


def _run_policy_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run policy")
    timeout = group.add_argument(
        "--exec-timeout", dest="task_timeout", metavar="DURATION", help="execution timeout of one attempt"
    )
    # `--timeout` after `task create`/`update` always meant the execution timeout: kept so.
    _argnames.add_alias(group, "--timeout", timeout)
    group.add_argument("--guarantee", help="at-least-once (default) | exactly-once | at-most-once")
    group.add_argument("--priority", help="high | medium (default) | low")
    group.add_argument(
        "--misfire", metavar="POLICY", help="missed times: skip | fire-once | fire-all (default)"
    )
    group.add_argument(
        "--catchup-window", metavar="DURATION", help="missed times older than this never fire (default 60s)"
    )
    group.add_argument("--max-catchup", type=int, metavar="N", help="fire-all fires at most N missed times")
    group.add_argument(
        "--overlap",
        metavar="POLICY",
        help="a fire while the previous run is on: skip | buffer-one | buffer-all | cancel-other | "
        "terminate-other | allow-all (default)",
    )
    group.add_argument(
        "--max-concurrency", type=int, metavar="N", help="at most N executions leased at once (0: no limit)"
    )
    group.add_argument(
        "--start-deadline",
        metavar="DURATION",
        help="an execution not started this long after its fire ends `expired` (0: none)",
    )
    group.add_argument(
        "--depends-on",
        action="append",
        default=[],
        metavar="TASK_ID[:WINDOW]",
        help="run only after TASK_ID succeeded for the same logical date (or within WINDOW before)",
    )
    group.add_argument(
        "--dependency-deadline",
        metavar="DURATION",
        help="fail a run whose dependencies are still unmet this long after its fire (default: wait)",
    )
    group.add_argument(
        "--sensor-command",
        metavar="'ARGV...'",
        help="a probe (shell-split, run without a shell) that must exit 0 before the payload runs",
    )
    group.add_argument("--sensor-interval", metavar="DURATION", help="how often the probe runs (default 10s)")
    group.add_argument(
        "--sensor-timeout", metavar="DURATION", help="give up (the run fails) after this (default 1h)"
    )


def _retry_arguments(parser: argparse.ArgumentParser, *, update: bool) -> None:
    group = parser.add_argument_group("retries")
    attempts = group.add_argument(
        "--retry-attempts", dest="max_attempts", type=int, metavar="N", help="attempts per execution"
    )
    _argnames.add_alias(group, "--max-attempts", attempts)
    group.add_argument("--retry-initial", metavar="DURATION", help="first retry backoff (default 1s)")
    group.add_argument("--retry-multiplier", type=float, metavar="X", help="backoff multiplier (default 2.0)")
    cap = group.add_argument(
        "--retry-max-backoff", dest="retry_max", metavar="DURATION", help="backoff cap (default 5m)"
    )
    _argnames.add_alias(group, "--retry-max", cap)
    group.add_argument(
        "--retry-on-exit",
        action="append",
        default=[],
        metavar="CODES",
        help="retry only these exit codes (repeatable, or 1,2); HTTP statuses for --http-url (503,429)",
    )
    never = group.add_argument(
        "--retry-never-on-exit",
        dest="no_retry_on_exit",
        action="append",
        default=[],
        metavar="CODES",
        help="never retry these exit codes (repeatable, or 2,64); HTTP statuses for --http-url (404)",
    )
    _argnames.add_alias(group, "--no-retry-on-exit", never)
    group.add_argument(
        "--retry-on-timeout",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="whether a timed-out attempt is retried (default yes)",
    )
    if update:
        text = "drop the retry policy (the cluster default applies)"
        _clear(group, "--clear-retry", dest="reset_retry", text=text, old="--reset-retry")


def _notify_arguments(parser: argparse.ArgumentParser, *, update: bool) -> None:
    group = parser.add_argument_group("notifications")
    group.add_argument(
        "--notify",
        dest="notify_names",
        action="append",
        default=[],
        metavar="NAME[,events=E+E]",
        help="notify through NAME, a notifier defined in the nodes' config ([notifiers.NAME]; repeatable); "
        "events: failure, timeout, dead-letter, missed",
    )
    group.add_argument(
        "--notify-webhook",
        action="append",
        default=[],
        metavar="URL[,events=E+E]",
        help="POST a JSON notification to URL, whose host the nodes' [notify] webhook_hosts must allow "
        "(repeatable)",
    )
    # Removed (issue 13): a task may not make the leader run a command. Kept hidden to say so.
    group.add_argument("--notify-command", action="append", default=[], help=argparse.SUPPRESS)
    if update:
        text = "remove every notification target"
        _clear(group, "--clear-notify", dest="no_notify", text=text, old="--no-notify")


def _placement_arguments(parser: argparse.ArgumentParser, *, update: bool) -> None:
    group = parser.add_argument_group("placement")
    group.add_argument("--queue", help="worker queue (default: default)")
    group.add_argument(
        "--worker-label",
        action="append",
        default=[],
        type=_argnames.key_value("--worker-label"),
        metavar=_argnames.KEY_VALUE,
        help="a label the worker must carry (schedworker --worker-label; repeatable)",
    )
    if update:
        text = "remove a worker label (repeatable)"
        old = "--remove-worker-label"
        _clear(group, "--clear-worker-label", dest="remove_worker_label", text=text, old=old, key=True)


def _retention_arguments(parser: argparse.ArgumentParser, *, update: bool) -> None:
    kept = parser.add_argument_group("retention (docs/operations.md; default: the cluster's [retention])")
    kept.add_argument(
        "--keep-executions",
        metavar="N|forever",
        help="keep the newest N executions of the task (their logs, dead letters, ledger records too)",
    )
    kept.add_argument(
        "--retention",
        dest="execution_retention",
        metavar="DURATION|forever",
        help="delete an execution this long after it ended",
    )
    kept.add_argument(
        "--ended-retention",
        metavar="DURATION|forever",
        help="delete the task itself this long after it completed or was cancelled",
    )
    if update:
        text = "drop the task's own retention (the cluster's defaults apply)"
        _clear(kept, "--clear-retention", dest="reset_retention", text=text, old="--reset-retention")
