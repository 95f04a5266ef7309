"""The versions of everything that changes schedule results, and their comparison between members. Pure.

Every node computes every fire of the replicated state machine itself, so two nodes that compute fires
differently would disagree on what the log means (issue 12, "Determinism across nodes"). What decides a
schedule's results besides the log:

- "evaluator": our cron evaluator's rules, `cronraft.raft.cron.EVALUATOR_VERSION` (bumped with any change
  that could move a fire);
- "tzdata": the IANA release (e.g. "2026f") of the `tzdata` *package*, because `raft.schedule` reads every
  zone from that package (`ZoneInfo.from_file` over its resources), never from zoneinfo's TZPATH or the
  host's /usr/share/zoneinfo. The IANA release, not the package's version ("2026.6"): a package re-release
  with the same data computes the same fires;
- "holidays": the `holidays` package (calendars' holiday sets);
- "python-dateutil": the package holidays computes movable feasts (Easter and what follows it) with.

Each is read from the module actually imported (its `__version__` / `IANA_VERSION`), not from installed
metadata, which could describe another copy than the one on sys.path. The project's own version
("cronraft") is reported beside them but not compared: the state machine's rules carry no version of
their own (a log entry of a newer codec is refused by `raft.codec`), and comparing the release would hold
dispatching back for the whole of every rolling upgrade. What a release adds to the state machine is
announced beside these, as named features (raft.features: the feature gate).

`schedule_versions(override)` takes the test-only override (the daemon reads it from
CRONRAFT_TEST_VERSION_OVERRIDE, "tzdata=2099z,holidays=0.1"): integration tests use it to fake another
version on one node. Never set it in production.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from cronraft import __version__ as CRONRAFT_VERSION
from cronraft.raft.calendar import HOLIDAYS_VERSION
from cronraft.raft.cron import EVALUATOR_VERSION
from cronraft.raft.schedule import TZDATA_VERSION  # the tzdata package's IANA_VERSION

__all__ = [
    "COMPARED",
    "OVERRIDE_ENV",
    "Difference",
    "describe",
    "differences",
    "parse_override",
    "schedule_versions",
]

# The keys compared between members, in the order they are reported.
COMPARED = ("evaluator", "tzdata", "holidays", "python-dateutil")
# Test-only: "name=version[,name=version...]" replaces those versions on a node (module doc).
OVERRIDE_ENV = "CRONRAFT_TEST_VERSION_OVERRIDE"

Difference = tuple[str, str, str, str]  # (member, package, its version, ours)


def parse_override(text: str) -> dict[str, str]:
    """{"tzdata": "2099z"} from "tzdata=2099z"; ValueError naming what is wrong (unknown key, no '=')."""
    out: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, version = item.partition("=")
        name, version = name.strip(), version.strip()
        if not sep or not version or name not in COMPARED:
            raise ValueError(
                f"{OVERRIDE_ENV}: {item!r} is not NAME=VERSION with NAME one of {', '.join(COMPARED)}"
            )
        out[name] = version
    return out


def schedule_versions(override: str = "") -> dict[str, str]:
    """The versions this process computes fires with: the COMPARED keys, then "cronraft" (not compared).
    `override` is the test-only CRONRAFT_TEST_VERSION_OVERRIDE text (module doc)."""
    versions = {
        "evaluator": EVALUATOR_VERSION,
        "tzdata": TZDATA_VERSION,
        "holidays": HOLIDAYS_VERSION,
        "python-dateutil": importlib.import_module("dateutil").__version__,
    }
    versions.update(parse_override(override))
    versions["cronraft"] = CRONRAFT_VERSION
    return versions


def differences(own: Mapping[str, str], members: Mapping[str, Mapping[str, str] | None]) -> list[Difference]:
    """Each (member, package, its version, ours) where a member's compared version differs from `own`.
    A member mapped to None (not measured yet, or silent lately) is left out: it cannot be judged. A
    package a member does not report at all (an older node) counts as "unknown", which differs."""
    out: list[Difference] = []
    for member in sorted(members):
        theirs = members[member]
        if theirs is None:
            continue
        for name in COMPARED:
            mine, its = own.get(name, "unknown"), theirs.get(name, "unknown")
            if its != mine:
                out.append((member, name, its, mine))
    return out


def describe(diffs: list[Difference], *, self_id: str) -> str:
    """One line for the status and the log: "node3 runs tzdata 2099z, node1 2026f; ..."; '' when none."""
    parts = [f"{member} runs {name} {its}, {self_id} {mine}" for member, name, its, mine in diffs]
    return "; ".join(parts)
