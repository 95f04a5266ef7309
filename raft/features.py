"""The cluster's feature level: what a release adds that an older node cannot apply identically, what this
build supports, and when the leader may raise the level (docs/operations.md, "Upgrades"). Pure.

During a rolling upgrade old and new nodes apply the same log. A new command kind, a new field an older
node ignores, or a new rule in apply would make the replicas differ. So every such change is a named
*feature*; the replicated state keeps the set of features the cluster uses (`meta/features`), and:

- apply behaves as the older release for a feature that is not in the set (raft.commands: results are
  not kept, statistics are not counted; commands carry no plans), so an upgraded node applies exactly
  what the nodes it has not caught up with yet apply;
- the leader adds features to the set (`RaiseFeatures`, raft/commands/features.py) only once every
  member of the configuration announced that it supports them (`raisable`: each node's clock-probe
  answer lists its build's `SUPPORTED`; an older node lists none, a silent member cannot be judged);
- the set is never lowered: a node whose build lacks an active feature must not rejoin (the rollback
  rules in docs/operations.md), and says so in its status and log (`unsupported`).

A store begins with none, whatever release opens it, and the log raises them: a node's level comes from
RaiseFeatures entries only (or a snapshot), so that a fresh node replaying a log an older release began
applies it as that release did. A new cluster's first leader proposes RaiseFeatures with its Epoch, in the
same entry, when every member supports the features (daemon.leader_runner): a cluster of one release uses
them from its first entry. (A state machine made in process, by tests and benchmarks, starts with every
feature of its build: raft.state's `fresh_features`.) An API request that needs a feature the cluster
does not have yet is refused with FAILED_PRECONDITION naming it (`require`), rather than answered or
applied differently by the replicas.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from cronraft.errors import FailedPrecondition
from cronraft.raft.kv import Txn

__all__ = [
    "FEATURES",
    "FIRE_GRANT",
    "MEMBERSHIP",
    "META_FEATURES",
    "RESULTS",
    "SCHEDULE_FIXES",
    "SCHEDULE_PLANS",
    "STATS",
    "SUPPORTED",
    "WORKER_FEATURES",
    "decode",
    "encode",
    "is_active",
    "level",
    "raisable",
    "raise_level",
    "require",
    "unsupported",
]

RESULTS = "results"
STATS = "stats"
SCHEDULE_PLANS = "schedule_plans"
MEMBERSHIP = "membership"
FIRE_GRANT = "fire_grant"
SCHEDULE_FIXES = "schedule_fixes"

# Every feature this build knows, with what it changes (status, the docs, the refusal's message). The
# release before the gate (baa42d0) had none of them: each was added after it.
FEATURES: Mapping[str, str] = {
    RESULTS: "attempt results kept (AttemptResult.result, Limits.max_result_bytes in Complete)",
    STATS: "execution statistics counted by apply (Task.outcomes, per-hour task and cluster statistics)",
    SCHEDULE_PLANS: "fire instants computed by the leader and carried in commands (Command.plan)",
    MEMBERSHIP: "membership changes through the log (ChangeMembership)",
    FIRE_GRANT: "a fire's lease granted by the Fire itself (Fire.grant), not by a Grant after it",
    SCHEDULE_FIXES: (
        "apply's schedule corrections of 2026-12: a fixed-delay task resumed after its next run came due "
        "runs at the resume (was: completed), a task edited while paused gets the new schedule's next "
        "fire (was: kept the old one's), nominal times a calendar excludes among those missed while the "
        "cluster could not fire are skipped_calendar and fire_once fires the latest included one (were: "
        "missed_downtime, and fire_once could fire an excluded time), an overlap skip or drop says which "
        "execution still runs in words (was: 'is execution_running'), keep_executions keeps a task's "
        "newest N executions, live or ended (was: its oldest ended ones went while it held more than N, "
        "so older runs still live made the newest ended ones go), a request id is its caller's: another "
        "caller reusing it makes a new write (was: got the first caller's recorded answer), a retried "
        "create, import or trigger is audited with the ids it was answered with (was: its command's own), "
        "a task whose calendars roll has the times it missed while the cluster could not fire judged at "
        "their rolled instants: one still to come is planned, fire_once fires the latest one passed, once, "
        "and fire_all catches up one rolled into its window (were: judged at their nominal times, "
        "missed_downtime, fire_once could fire a time rolled to later or fire twice, fire_all dropped a "
        "rolled fire late by seconds), fire_once past the first 100 missed times fires the latest one "
        "a calendar includes (was: the 100th), and fire_once's fire is recorded due when the time it "
        "fires was due, late from then (was: when the oldest missed time was due, late by the outage), "
        "an attempt whose lease expired is recorded with the outcome lost (was: no outcome), a dependency "
        "on a deleted task says it was deleted (was: 'waiting for ? (ID)'), a time rolled back to before "
        "the task was created, edited or resumed is skipped_calendar (was: due then, fired at once, late)"
    ),
}
SUPPORTED: frozenset[str] = frozenset(FEATURES)
# What a worker of this build announces in its Hello: it hands results back ($CRONRAFT_RESULT_FILE).
WORKER_FEATURES: frozenset[str] = frozenset({RESULTS})

META_FEATURES = b"features"  # meta key: the features in force, sorted, comma-separated


def encode(names: Iterable[str]) -> bytes:
    return ",".join(sorted(set(names))).encode()


def decode(raw: bytes | None) -> frozenset[str]:
    if not raw:
        return frozenset()
    return frozenset(n for n in raw.decode().split(",") if n)


def level(txn: Txn) -> frozenset[str]:
    """The features in force as applied so far (empty for a store an older release wrote)."""
    return decode(txn.get("meta", META_FEATURES))


def is_active(txn: Txn, name: str) -> bool:
    return name in level(txn)


def raise_level(txn: Txn, names: Iterable[str]) -> frozenset[str]:
    """Add `names` to the features in force (never removes one); the new set."""
    now = level(txn) | frozenset(names)
    txn.put("meta", META_FEATURES, encode(now))
    return now


def raisable(
    active: Collection[str],
    own: Collection[str],
    members: Mapping[str, Collection[str] | None],
) -> tuple[frozenset[str], str]:
    """What the leader may add to `active` now, and why the rest of `own` waits ('' when nothing does).

    `members` maps every other member of the configuration to the features it announced in its last
    clock-probe answer, or None when it has no recent answer (down, cut off, not probed yet): a member
    that cannot be judged holds every feature back, since it may come back running an older release. An
    older release announces nothing (an empty set)."""
    want = frozenset(own) - frozenset(active)
    if not want:
        return frozenset(), ""
    ok = set(want)
    waits: list[str] = []
    for member in sorted(members):
        theirs = members[member]
        if theirs is None:
            waits.append(f"{member} has not answered lately")
            ok.clear()
            continue
        lacking = want - frozenset(theirs)
        if lacking:
            waits.append(f"{member} does not support {', '.join(sorted(lacking))}")
            ok -= lacking
    if not ok:
        return frozenset(), "; ".join(waits)
    return frozenset(ok), "; ".join(waits)


def unsupported(active: Collection[str], own: Collection[str] = SUPPORTED) -> frozenset[str]:
    """Features in force that this build does not have: it was rolled back below the cluster's level."""
    return frozenset(active) - frozenset(own)


def require(txn: Txn, name: str, what: str) -> None:
    """Refuse `what` (e.g. "GetTaskStats") with FAILED_PRECONDITION while the cluster lacks `name`."""
    if not is_active(txn, name):
        raise FailedPrecondition(
            f"{what} needs the cluster feature {name!r} ({FEATURES.get(name, name)}), which the cluster "
            "does not use yet: a rolling upgrade is in progress or a member runs an older release; it is "
            "turned on once every member runs a release that supports it (cluster status: features)"
        )
