"""Failpoints: named places in the code where a test can make a process crash or stall on purpose.

`failpoint("worker.after_finish_before_report")` does nothing unless the environment variable
CRONRAFT_FAILPOINTS names it, e.g. `CRONRAFT_FAILPOINTS=worker.after_finish_before_report=crash`.
Actions: `crash` (exit at once with status 137, as a SIGKILL would: no cleanup, no flush),
`sleep:MS` (block the calling thread), `once-crash` (crash only if the marker file given by
CRONRAFT_FAILPOINT_MARKER does not exist yet; it is created first, so a restarted process passes).
Read once at import: a failpoint costs one dict lookup when disabled.

`raise:SUBJECT` or `raise:SUBJECT:TEXT` is for `raiser(name)`, which returns a check that raises
RuntimeError when called with SUBJECT and data containing TEXT. `raft.apply=raise:put_calendar:poison`
makes the state machine's handler fail for every PutCalendar whose command contains "poison" (a
deterministic failure: set it on every node, or the nodes diverge on purpose).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

_SPEC = os.environ.get("CRONRAFT_FAILPOINTS", "")
_ACTIONS: dict[str, str] = dict(
    item.split("=", 1) for item in (part.strip() for part in _SPEC.split(",")) if "=" in item
)


def failpoint(name: str) -> None:
    action = _ACTIONS.get(name)
    if action is None:
        return
    if action == "crash":
        os._exit(137)
    if action == "once-crash":
        marker = os.environ.get("CRONRAFT_FAILPOINT_MARKER", "")
        if marker and not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(name)
            os._exit(137)
        return
    if action.startswith("sleep:"):
        time.sleep(int(action.split(":", 1)[1]) / 1000)


def raiser(name: str) -> Callable[[str, bytes], None] | None:
    """For `name=raise:SUBJECT[:TEXT]`, a check `(subject, data)` that raises RuntimeError when `subject`
    is SUBJECT and `data` contains TEXT; None when `name` is not set to a `raise` action."""
    action = _ACTIONS.get(name, "")
    if not action.startswith("raise:"):
        return None
    subject, _, text = action[len("raise:") :].partition(":")
    needle = text.encode()

    def check(given: str, data: bytes) -> None:
        if given == subject and needle in data:
            raise RuntimeError(f"failpoint {name}: injected failure for {subject}")

    return check


def enabled() -> bool:
    return bool(_ACTIONS)


__all__ = ["enabled", "failpoint", "raiser"]
