"""Secrets on read (daemon.redact, issue 13): what a caller without the `secrets` permission sees, and
how a redacted value sent back in an update keeps the stored one (or is refused, naming the field)."""

from __future__ import annotations

import pytest

from cronraft.daemon.redact import (
    REDACTED,
    redact_reply,
    redact_spec,
    redact_url,
    refuse_placeholders,
    restore,
)
from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2, scheduler_pb2


def _spec() -> common_pb2.TaskSpec:
    spec = common_pb2.TaskSpec(
        name="t",
        payload=common_pb2.Payload(
            command=common_pb2.CommandPayload(
                argv=["backup"], env={"DB_PASSWORD": "hunter2", "DB_USER": "secret:dbuser", "EMPTY": ""}
            )
        ),
        sensor=common_pb2.Sensor(
            probe=common_pb2.Payload(
                http=common_pb2.HttpPayload(
                    url="https://api.example/ready",
                    headers={"Authorization": "Bearer abc", "Content-Type": "application/json"},
                )
            )
        ),
    )
    spec.notify.add(webhook_url="https://hooks.example/x?token=abc&team=data")
    return spec


def _http_spec() -> common_pb2.TaskSpec:
    return common_pb2.TaskSpec(
        name="h",
        payload=common_pb2.Payload(
            http=common_pb2.HttpPayload(
                url="https://api.example/run", headers={"X-Api-Key": "k3y", "Accept": "text/plain"}
            )
        ),
    )


def test_secret_bearing_values_are_redacted_and_references_are_shown() -> None:
    spec = _spec()
    assert redact_spec(spec)
    env = spec.payload.command.env
    assert env["DB_PASSWORD"] == REDACTED
    assert env["DB_USER"] == "secret:dbuser"  # resolved on the worker: no secret in it
    assert env["EMPTY"] == ""
    assert list(spec.payload.command.argv) == ["backup"]
    headers = spec.sensor.probe.http.headers
    assert headers["Authorization"] == REDACTED
    assert headers["Content-Type"] == "application/json"  # describes the request, never a credential
    assert spec.notify[0].webhook_url == f"https://hooks.example/x?token={REDACTED}&team={REDACTED}"
    http = _http_spec()
    assert redact_spec(http)
    assert dict(http.payload.http.headers) == {"X-Api-Key": REDACTED, "Accept": "text/plain"}
    assert http.payload.http.url == "https://api.example/run"


def test_a_spec_without_secrets_is_unchanged() -> None:
    spec = common_pb2.TaskSpec(
        name="t", payload=common_pb2.Payload(command=common_pb2.CommandPayload(argv=["true"]))
    )
    spec.notify.add(notifier="page")
    before = spec.SerializeToString()
    assert not redact_spec(spec)
    assert spec.SerializeToString() == before


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example/a/b", "https://hooks.example/a/b"),
        ("https://u:pw@hooks.example/a", f"https://u:{REDACTED}@hooks.example/a"),
        ("https://u@hooks.example/a", "https://u@hooks.example/a"),
        ("https://h.example/a?k=v&flag&s=secret:X", f"https://h.example/a?k={REDACTED}&flag&s=secret:X"),
        ("https://h.example/a?k=#frag", "https://h.example/a?k=#frag"),
        ("http://[::1/", REDACTED),  # cannot be taken apart: none of it is shown
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_replies_are_redacted_at_any_depth_by_namespace_and_never_modified_in_place() -> None:
    shared = _spec()
    team = _spec()
    team.namespace = "team"
    ex = common_pb2.Execution(execution_id="e", token=common_pb2.FencingToken(term=2, index=7))
    reply = scheduler_pb2.ListTasksResponse(
        tasks=[common_pb2.Task(task_id="a", spec=shared), common_pb2.Task(task_id="b", spec=team)]
    )
    out = redact_reply(reply, lambda namespace: namespace == "team")  # an operator of "team" only
    assert isinstance(out, scheduler_pb2.ListTasksResponse)
    assert out.tasks[0].spec.payload.command.env["DB_PASSWORD"] == REDACTED
    assert out.tasks[1].spec.payload.command.env["DB_PASSWORD"] == "hunter2"
    assert reply.tasks[0].spec.payload.command.env["DB_PASSWORD"] == "hunter2"  # the original is intact
    hidden = redact_reply(ex, lambda namespace: False)
    assert isinstance(hidden, common_pb2.Execution)
    assert not hidden.HasField("token") and hidden.execution_id == "e"
    assert ex.HasField("token")
    assert redact_reply(ex, lambda namespace: True) is ex  # nothing to hide: no copy
    created = scheduler_pb2.CreateTaskResponse(task=common_pb2.Task(spec=_http_spec()))
    out_created = redact_reply(created, lambda namespace: False)
    assert isinstance(out_created, scheduler_pb2.CreateTaskResponse)
    assert out_created.task.spec.payload.http.headers["X-Api-Key"] == REDACTED


def _redacted(spec: common_pb2.TaskSpec) -> common_pb2.TaskSpec:
    out = common_pb2.TaskSpec()
    out.CopyFrom(spec)
    redact_spec(out)
    return out


def test_a_redacted_spec_sent_back_with_other_changes_keeps_the_stored_values() -> None:
    stored = _spec()
    edited = _redacted(stored)
    edited.tags["team"] = "data"  # a read-modify-write that changes something else
    edited.timeout_ms = 60_000
    restore(edited, stored)
    assert edited.payload == stored.payload
    assert edited.sensor == stored.sensor
    assert list(edited.notify) == list(stored.notify)
    assert edited.tags["team"] == "data"
    refuse_placeholders(edited)  # nothing left to refuse


def test_a_payload_changed_around_a_placeholder_is_refused_naming_the_field() -> None:
    stored = _spec()
    edited = _redacted(stored)
    edited.payload.command.argv[:] = ["sh", "-c", "echo $DB_PASSWORD"]  # would print the secret
    with pytest.raises(InvalidArgument) as e:
        restore(edited, stored)
    assert e.value.field == "spec.payload.command.env.DB_PASSWORD"
    assert "unchanged" in str(e.value)
    edited = _redacted(stored)
    edited.payload.command.env["LD_PRELOAD"] = "/tmp/x.so"  # another variable changes what runs
    with pytest.raises(InvalidArgument, match=r"spec\.payload\.command\.env\.DB_PASSWORD"):
        restore(edited, stored)
    edited = _redacted(stored)
    edited.sensor.probe.http.url = "https://attacker.example/"
    with pytest.raises(InvalidArgument, match=r"spec\.sensor\.probe\.http\.headers\.Authorization"):
        restore(edited, stored)
    edited = _redacted(stored)
    edited.notify[0].webhook_url = f"https://attacker.example/x?token={REDACTED}&team={REDACTED}"
    with pytest.raises(InvalidArgument, match=r"spec\.notify\[0\]\.webhook_url"):
        restore(edited, stored)


def test_a_new_value_replaces_a_stored_one_and_a_placeholder_without_one_is_refused() -> None:
    stored = _spec()
    edited = _redacted(stored)
    edited.payload.command.env["DB_PASSWORD"] = "n3w"  # an operator's (or anyone's) new value
    edited.payload.command.argv[:] = ["backup", "--full"]
    edited.sensor.probe.http.headers["Authorization"] = "secret:probe-token"
    edited.notify[0].webhook_url = "https://hooks.example/y"
    restore(edited, stored)
    assert edited.payload.command.env["DB_PASSWORD"] == "n3w"
    edited = _redacted(stored)
    edited.payload.command.env["NEW"] = REDACTED
    with pytest.raises(InvalidArgument) as e:
        restore(edited, stored)
    assert e.value.field == "spec.payload.command.env.NEW"
    with pytest.raises(InvalidArgument, match="has none here"):
        restore(_redacted(stored), None)  # the task is gone


def test_placeholders_are_refused_where_nothing_is_stored() -> None:
    for spec, field in (
        (_redacted(_spec()), "spec.payload.command.env.DB_PASSWORD"),
        (_redacted(_http_spec()), "spec.payload.http.headers.X-Api-Key"),
    ):
        with pytest.raises(InvalidArgument) as e:
            refuse_placeholders(spec)  # a create or an import of what a reader exported
        assert e.value.field == field
        assert "placeholder" in str(e.value)
    only_webhook = common_pb2.TaskSpec(name="w")
    only_webhook.notify.add(webhook_url=f"https://hooks.example/x?token={REDACTED}")
    with pytest.raises(InvalidArgument, match=r"spec\.notify\[0\]\.webhook_url"):
        refuse_placeholders(only_webhook)
    refuse_placeholders(_spec())
