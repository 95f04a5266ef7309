"""The pysyncobj version this adapter was checked against, and pysyncobj's failure reasons mapped to the
error tree."""

from __future__ import annotations

from pysyncobj import FAIL_REASON
from pysyncobj.version import VERSION as _INSTALLED_VERSION

from cronraft.errors import CronraftError, NotLeader, OutcomeUnknown, ResourceExhausted, Unavailable

PINNED_VERSION = "0.3.17"  # pyproject.toml pins pysyncobj==0.3.17; the private names above are its own


def version_problem() -> str | None:
    """Why the installed pysyncobj is not the one this adapter was checked against, or None."""
    if _INSTALLED_VERSION == PINNED_VERSION:
        return None
    return (
        f"pysyncobj {_INSTALLED_VERSION} is installed, but raft.pysyncobj_adapter was checked against "
        f"{PINNED_VERSION} (it uses private parts of pysyncobj): install pysyncobj=={PINNED_VERSION}"
    )


_FAIL_REASON_NAMES: dict[int, str] = {
    value: name for name, value in vars(FAIL_REASON).items() if not name.startswith("_")
}


def fail_reason_names() -> dict[str, int]:
    """Every pysyncobj FAIL_REASON by name (so that tests can check the mapping is complete)."""
    return {name: value for value, name in _FAIL_REASON_NAMES.items()}


def error_for_fail_reason(reason: int) -> CronraftError | None:
    """The one mapping from a pysyncobj FAIL_REASON to the error tree (None for SUCCESS)."""
    name = _FAIL_REASON_NAMES.get(reason, f"unknown({reason})")
    if reason == FAIL_REASON.SUCCESS:
        return None
    if reason == FAIL_REASON.QUEUE_FULL:
        return ResourceExhausted("the Raft command queue is full; retry later")
    if reason == FAIL_REASON.MISSING_LEADER:
        return Unavailable("no Raft leader (election in progress or no quorum); retry later")
    if reason == FAIL_REASON.NOT_LEADER:
        # Only on forwarding or our own refusal on the Raft thread: the entry was never appended here.
        return NotLeader(None)
    if reason == FAIL_REASON.REQUEST_DENIED:
        # Only membership and leadership-transfer requests are denied; we send neither as a proposal.
        return Unavailable("the Raft leader denied the request")
    if reason in (FAIL_REASON.DISCARDED, FAIL_REASON.LEADER_CHANGED, FAIL_REASON.UNKNOWN_OUTCOME):
        # DISCARDED: another entry took this index, so this one did not apply *there*; we still report
        # "unknown" so that every post-append failure has one retry rule (same request ids, deduplicated).
        return OutcomeUnknown(f"leadership changed before the entry committed ({name}); it may apply")
    return OutcomeUnknown(f"unexpected pysyncobj failure reason {name}")


__all__ = ["PINNED_VERSION", "error_for_fail_reason", "fail_reason_names", "version_problem"]
