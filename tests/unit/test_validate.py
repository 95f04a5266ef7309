"""Bad input names the field and the problem (I8), for every payload kind and policy."""

from __future__ import annotations

import pytest

from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2
from cronraft.raft.validate import validate_spec


def _spec(payload: common_pb2.Payload) -> common_pb2.TaskSpec:
    return common_pb2.TaskSpec(
        name="t", schedule=common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=1_000)), payload=payload
    )


GOOD = [
    common_pb2.Payload(command=common_pb2.CommandPayload(argv=["true"])),
    common_pb2.Payload(shell=common_pb2.ShellPayload(script="echo hi")),
    common_pb2.Payload(http=common_pb2.HttpPayload(url="https://example.invalid/hook", method="POST")),
    common_pb2.Payload(handler=common_pb2.HandlerPayload(name="send-reminder", args_json='{"user": 1}')),
]

BAD = [
    ("spec.payload", common_pb2.Payload()),
    ("spec.payload.command.argv", common_pb2.Payload(command=common_pb2.CommandPayload())),
    ("spec.payload.shell.script", common_pb2.Payload(shell=common_pb2.ShellPayload(script="  "))),
    ("spec.payload.http.url", common_pb2.Payload(http=common_pb2.HttpPayload(url="ftp://x/y"))),
    (
        "spec.payload.http.method",
        common_pb2.Payload(http=common_pb2.HttpPayload(url="http://h/", method="GE T")),
    ),
    (
        "spec.payload.http.expected_status[0]",
        common_pb2.Payload(http=common_pb2.HttpPayload(url="http://h/", expected_status=[42])),
    ),
    ("spec.payload.handler.name", common_pb2.Payload(handler=common_pb2.HandlerPayload(name=""))),
    (
        "spec.payload.handler.args_json",
        common_pb2.Payload(handler=common_pb2.HandlerPayload(name="h", args_json="[1, 2]")),
    ),
]


@pytest.mark.parametrize("payload", GOOD, ids=lambda p: p.WhichOneof("kind"))
def test_every_payload_kind_is_accepted(payload: common_pb2.Payload) -> None:
    validate_spec(_spec(payload))


@pytest.mark.parametrize(("field", "payload"), BAD, ids=[f for f, _ in BAD])
def test_bad_payloads_name_the_field(field: str, payload: common_pb2.Payload) -> None:
    with pytest.raises(InvalidArgument) as e:
        validate_spec(_spec(payload))
    assert e.value.field == field


@pytest.mark.parametrize(
    ("field", "changes"),
    [
        ("spec.max_catchup", {"max_catchup": -1}),
        ("spec.catchup_window_ms", {"catchup_window_ms": -5}),
        ("spec.max_attempts", {"max_attempts": 1000}),
        ("spec.queue", {"queue": "-bad"}),
    ],
)
def test_bad_policies_name_the_field(field: str, changes: dict[str, int | str]) -> None:
    spec = _spec(GOOD[0])
    for k, v in changes.items():
        setattr(spec, k, v)
    with pytest.raises(InvalidArgument) as e:
        validate_spec(spec)
    assert e.value.field == field


def test_the_memo_of_valid_specs_never_changes_a_verdict() -> None:
    """validate_spec remembers valid specs by everything but their name (bulk imports)."""
    spec = _spec(GOOD[0])
    spec.tags["team"] = "a"
    validate_spec(spec)
    same_but_name = common_pb2.TaskSpec()
    same_but_name.CopyFrom(spec)
    same_but_name.name = "another"
    validate_spec(same_but_name)
    assert same_but_name.name == "another" and spec.name == "t"  # the name is left as it was
    same_but_name.name = " "
    with pytest.raises(InvalidArgument) as info:
        validate_spec(same_but_name)  # the name is checked on every call
    assert info.value.field == "spec.name"
    # A bad spec is refused every time, and a limit is part of the verdict.
    bad = _spec(BAD[1][1])
    for _ in range(2):
        with pytest.raises(InvalidArgument):
            validate_spec(bad)
    validate_spec(spec, max_payload_bytes=1_000)
    with pytest.raises(InvalidArgument) as info:
        validate_spec(spec, max_payload_bytes=1)
    assert info.value.field == "spec.payload"
