"""The Cronraft SDK: `Client` (sync), `AsyncClient` (asyncio), spec builders and the error tree.

    from cronraft.client import Client, cron, command

    with Client("10.0.0.1:50051,10.0.0.2:50051") as client:
        task = client.create_task("hello", cron("*/5 * * * *", "Europe/Paris"), command("echo", "hello"))
        print(task.task_id, task.next_fire_ms)

Writes follow the leader (redirects) and are idempotent across retries (one request id per call); reads
go to any node. Schedules come from `cron`, `at`, `every` (fixed rate) and `delay` (fixed delay);
payloads from `command`, `shell`, `http` and `handler`; run policies from `retry`, `notify_webhook` and
`notify_command`; how long a task's history is kept from `retention`. Tasks are edited with
`Client.edit_task`, paused, resumed, triggered, backfilled and explained (the fire ledger); calendars
are `cronraft.v1.Calendar` messages stored with `Client.put_calendar`. Dead letters are listed, shown,
redriven and purged (`Client.list_dead_letters`, ...); `cancel_tasks`, `cancel_tasks_where` and
`cancel_executions` cancel in bulk, `delete_task`, `delete_tasks` and `delete_tasks_where` delete tasks
with their history; bulk calls return a `BulkResult`. `Client.import_tasks` creates many tasks through
the bulk API (batches created whole, idempotent per batch) and returns an `ImportResult`.
Errors are those of `cronraft.errors`, re-exported here.
"""

from cronraft.client._builders import (
    handler,
    http,
    notifier,
    notify_command,
    notify_webhook,
    retention,
    retry,
)
from cronraft.client._bulk import ImportResult
from cronraft.client._parsing import Duration, Instant
from cronraft.client._requests import BulkResult
from cronraft.client._specs import at, build_spec, command, cron, delay, every, shell
from cronraft.client.aio import AsyncClient
from cronraft.client.sdk import Client
from cronraft.errors import (
    CronraftError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    NotLeader,
    OutcomeUnknown,
    ResourceExhausted,
    Unavailable,
)
from cronraft.timefmt import parse_duration, parse_instant

__all__ = [
    "AsyncClient",
    "BulkResult",
    "Client",
    "CronraftError",
    "DeadlineExceeded",
    "Duration",
    "FailedPrecondition",
    "ImportResult",
    "Instant",
    "InvalidArgument",
    "NotFound",
    "NotLeader",
    "OutcomeUnknown",
    "ResourceExhausted",
    "Unavailable",
    "at",
    "build_spec",
    "command",
    "cron",
    "delay",
    "every",
    "handler",
    "http",
    "notifier",
    "notify_command",
    "notify_webhook",
    "parse_duration",
    "parse_instant",
    "retention",
    "retry",
    "shell",
]
