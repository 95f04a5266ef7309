"""raft.rejection (the typed rejection a command is answered with) and daemon.rejections (its one mapping
to the error tree): the recorded text must stay what it was (dedup table, state digest), field included."""

from __future__ import annotations

import pytest

from cronraft import errors
from cronraft.daemon.rejections import check_result, error_for
from cronraft.proto.v1 import commands_pb2
from cronraft.raft.rejection import Code, Rejected, Rejection, invalid_argument

CommandResult = commands_pb2.CommandResult

# Every code recorded before the typed rejection existed: renaming one would change stored results.
RECORDED = {
    "not_found", "already_exists", "invalid_argument", "invalid_state", "version_mismatch", "in_use",
    "running", "resource_exhausted", "not_due", "already_fired", "no_epoch", "stale_epoch", "stale_token",
    "backoff", "dependencies_unmet", "concurrency_limit", "unknown_command", "codec", "internal",
    "skipped_overlap", "refused",
}  # fmt: skip


def test_the_codes_are_the_recorded_strings() -> None:
    assert {c.value for c in Code} == RECORDED


def test_the_result_bytes_are_those_of_the_hand_built_result() -> None:
    made = Rejection(Code.INVALID_ARGUMENT, "must be >= from_ms > 0", "to_ms").result()
    legacy = CommandResult(
        applied=False, error_code="invalid_argument", error="to_ms: must be >= from_ms > 0"
    )
    assert made.SerializeToString() == legacy.SerializeToString()
    made = Rejected(Code.NOT_DUE, "task x is not due at 5").rejection.result()
    legacy = CommandResult(applied=False, error_code="not_due", error="task x is not due at 5")
    assert made.SerializeToString() == legacy.SerializeToString()


def test_rejected_reads_as_its_text_and_code() -> None:
    r = Rejected(Code.INVALID_ARGUMENT, "no calendar named 'x'", field="spec.schedule.calendars[0]")
    assert str(r) == "spec.schedule.calendars[0]: no calendar named 'x'"
    assert r.code == "invalid_argument" and type(r.code) is str


def test_an_invalid_argument_keeps_its_text() -> None:
    e = errors.InvalidArgument("spec.name", "must not be empty")
    assert invalid_argument(e).message == str(e)
    assert invalid_argument(e) == Rejection(Code.INVALID_ARGUMENT, "must not be empty", "spec.name")
    blank = errors.InvalidArgument("", "odd")
    assert invalid_argument(blank).message == str(blank)


def test_the_field_is_read_back_for_invalid_argument_only() -> None:
    res = CommandResult(
        applied=False, error_code="invalid_argument", error="to_ms: a backfill covers the past only"
    )
    assert Rejection.of_result(res) == Rejection(
        "invalid_argument", "a backfill covers the past only", "to_ms"
    )
    res = CommandResult(
        applied=False, error_code="version_mismatch", error="task x is at version 3, not 2: it changed"
    )
    assert Rejection.of_result(res) == Rejection(
        "version_mismatch", "task x is at version 3, not 2: it changed"
    )
    assert Rejection.of_result(CommandResult(applied=True)) is None
    newer = CommandResult(applied=False, error_code="from_a_newer_version", error="why")
    assert Rejection.of_result(newer) == Rejection("from_a_newer_version", "why")


@pytest.mark.parametrize(
    ("code", "text", "kind", "message"),
    [
        ("invalid_argument", "spec.name: is empty", errors.InvalidArgument, "spec.name: is empty"),
        ("invalid_argument", "no field here", errors.InvalidArgument, "request: no field here"),
        ("not_found", "task x not found", errors.NotFound, "task x not found"),
        ("resource_exhausted", "limits.max_tasks: 3", errors.ResourceExhausted, "limits.max_tasks: 3"),
        ("internal", "ValueError: x", errors.InternalError,
         "the command failed when applied and changed nothing: ValueError: x"),
        ("invalid_state", "task x is cancelled", errors.FailedPrecondition, "task x is cancelled"),
        ("stale_token", "token (1, 2) is stale", errors.FailedPrecondition, "token (1, 2) is stale"),
        ("from_a_newer_version", "why", errors.FailedPrecondition, "why"),
    ],
)  # fmt: skip
def test_each_code_maps_to_one_error(
    code: str, text: str, kind: type[errors.CronraftError], message: str
) -> None:
    with pytest.raises(errors.CronraftError) as caught:
        check_result(CommandResult(applied=False, error_code=code, error=text))
    assert type(caught.value) is kind and str(caught.value) == message


def test_a_bulk_batch_puts_its_place_in_front() -> None:
    e = error_for(Rejection(Code.INVALID_ARGUMENT, "must not be empty", "specs[2].name"), "batches[1]")
    assert isinstance(e, errors.InvalidArgument) and e.field == "batches[1].specs[2].name"
    e = error_for(Rejection(Code.INTERNAL, "ValueError: x"), "batches[1]")
    assert str(e) == "batches[1]: the command failed when applied and changed nothing: ValueError: x"
    e = error_for(Rejection(Code.RESOURCE_EXHAUSTED, "limits.max_tasks: 3"), "batches[0]")
    assert isinstance(e, errors.ResourceExhausted) and str(e) == "batches[0]: limits.max_tasks: 3"


def test_an_applied_result_raises_nothing() -> None:
    check_result(CommandResult(applied=True))
