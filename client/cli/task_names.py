"""Tasks named by name on the command line: `schedctl task get nightly` as well as `task get 01M9...`.

A task id is a ULID (26 characters of Crockford's base-32 alphabet, upper case, as every id Cronraft
prints); any other argument where a command takes a task id is a task's name, looked up among the tasks of
the client's namespace (`--namespace`, $CRONRAFT_NAMESPACE, else default) through ListTasks' name filter
(the names index, in name order: the exact name's tasks come first). Exactly one task of that name: its id
is used. Several (names are not unique): a usage error listing their ids, so that nothing is done to a
task the user did not mean. None: the argument goes to the server as it is, which refuses it as an id;
`explain` then words that refusal as "no task named ..." (passed on as it is, a test double's own ids,
which are not ULIDs, keep working).
"""

from __future__ import annotations

import argparse
import re

from cronraft.client.cli.common import UsageError
from cronraft.client.sdk import Client
from cronraft.errors import CronraftError, DeadlineExceeded, InvalidArgument, NotFound, Unavailable

_ID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
# Arguments that hold a task id, by their argparse dest: positional ID / TASK_ID, several IDs, --task.
_ONE = ("task_id", "task")
_MANY = ("task_ids",)
SHOWN = 5  # ids listed when a name is ambiguous
SCANNED = 200  # tasks whose names start with the one given, looked at at most


def looks_like_id(text: str) -> bool:
    return _ID.fullmatch(text) is not None


def task_id_of(client: Client, text: str) -> str:
    """`text` if it is an id, else the id of the one task of the client's namespace named `text` (`text`
    itself when there is none: see the module)."""
    if not text or looks_like_id(text):
        return text
    ids: list[str] = []
    # The server answers in name order, so the tasks of exactly this name come first; the names that
    # only start with it, after them, are looked at up to a bound, not all read.
    for seen, task in enumerate(client.list_tasks(name_prefix=text, page_size=100)):
        if seen >= SCANNED or len(ids) > SHOWN:
            break
        if task.spec.name == text:
            ids.append(task.task_id)
    if not ids:
        return text
    if len(ids) > 1:
        more = ", ..." if len(ids) > SHOWN else ""
        raise UsageError(
            f"{'more than ' + str(SHOWN) if len(ids) > SHOWN else len(ids)} tasks are named {text!r}: "
            f"give its id ({', '.join(ids[:SHOWN])}{more})"
        )
    return ids[0]


def resolve(client: Client, args: argparse.Namespace) -> None:
    """Replace the task names among `args`' task-id arguments with their tasks' ids (see the module)."""
    unknown: list[str] = []
    unreachable = False

    def one(text: str) -> str:
        nonlocal unreachable
        if unreachable or looks_like_id(text):
            return text
        try:
            found = task_id_of(client, text)
        except (Unavailable, DeadlineExceeded):
            # The command itself says so, per argument where it takes several: no lookup waits again.
            unreachable = True
            return text
        if found == text:
            unknown.append(text)
        return found

    for dest in _ONE:
        value = getattr(args, dest, None)
        if isinstance(value, str) and value:
            setattr(args, dest, one(value))
    for dest in _MANY:
        values = getattr(args, dest, None)
        if isinstance(values, list) and values:
            setattr(args, dest, [one(v) for v in values])
    args.unknown_task_names = (unknown, client.namespace)


def explain(args: argparse.Namespace | None, error: CronraftError) -> CronraftError:
    """`error` as the user should read it: the server's refusal of a task id that was meant as a name
    nobody has (`resolve`) says so."""
    unknown, namespace = getattr(args, "unknown_task_names", ((), ""))
    if unknown and isinstance(error, InvalidArgument) and "not a valid id" in error.problem:
        names = ", ".join(repr(n) for n in unknown)
        return NotFound(
            f"no task named {names} in namespace {namespace!r} (nor is it a task id: 26 characters)"
        )
    return error
