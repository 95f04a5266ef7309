"""Bounds on every input (issue 11): each field a client or a worker sends has a bound, and going past it
is refused with InvalidArgument naming the field and the bound, by the same function on the leader and in
apply. The refusals through the real API are in tests/integration/test_limits.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cronraft import bounds
from cronraft.daemon import wire
from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import commands_pb2, common_pb2, worker_pb2
from cronraft.raft import calendar as cal
from cronraft.raft import validate
from cronraft.raft.codec import encode_batch, make_id
from cronraft.raft.kv import MemKV
from cronraft.raft.state import StateMachine
from cronraft.raft.validate import json_depth, validate_spec

T0 = 1_767_225_600_000


def spec(**changes: object) -> common_pb2.TaskSpec:
    s = common_pb2.TaskSpec(
        name="t",
        schedule=common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=T0 + 3_600_000)),
        payload=common_pb2.Payload(command=common_pb2.CommandPayload(argv=["true"])),
    )
    for path, value in changes.items():
        *parents, last = path.split(".")
        target = s
        for p in parents:
            target = getattr(target, p)
        field = getattr(target, last)
        if isinstance(value, dict):
            field.update(value)
        elif isinstance(value, list):
            field.extend(value)
        else:
            setattr(target, last, value)
    return s


def refused(s: common_pb2.TaskSpec, **kw: int) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as e:
        validate_spec(s, **kw)
    return e.value


def notify_command(**kw: object) -> common_pb2.NotifyTarget:
    return common_pb2.NotifyTarget(command=common_pb2.CommandPayload(**kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "bound", "changes"),
    [
        ("spec.payload.command.env", "1024", {"payload.command.env": {f"V{i}": "" for i in range(1025)}}),
        ("spec.payload.command.cwd", "4096", {"payload.command.cwd": "/" + "x" * 4096}),
        ("spec.worker_labels", "64", {"worker_labels": {f"k{i}": "v" for i in range(65)}}),
        ("spec.worker_labels.k", "256", {"worker_labels": {"k": "v" * 257}}),
        ("spec.schedule.calendars", "16", {"schedule.calendars": [f"c{i}" for i in range(17)]}),
        ("spec.schedule.calendars[0]", "64", {"schedule.calendars": ["c" * 65]}),
        ("spec.retry.multiplier", "100", {"retry.multiplier": 1e308}),
        ("spec.retry.multiplier", "100", {"retry.multiplier": float("nan")}),
        ("spec.retry.initial_backoff_ms", "2592000000", {"retry.initial_backoff_ms": -1}),
        ("spec.retry.retryable_exit_codes", "256", {"retry.retryable_exit_codes": list(range(257))}),
        ("spec.max_concurrency", "negative", {"max_concurrency": -1}),
        ("spec.start_deadline_ms", "negative", {"start_deadline_ms": -1}),
        (
            "spec.sensor.timeout_ms",
            "2592000000",
            {"sensor.probe.shell.script": "true", "sensor.timeout_ms": 2**62},
        ),
        (
            "spec.sensor.interval_ms",
            "86400000",
            {"sensor.probe.shell.script": "true", "sensor.interval_ms": 2**40},
        ),
    ],
)
def test_spec_fields_over_their_bound_are_refused_naming_field_and_bound(
    field: str, bound: str, changes: dict[str, object]
) -> None:
    e = refused(spec(**{k: v for k, v in changes.items()}))
    assert e.field == field
    assert bound in e.problem


def test_http_payload_bounds() -> None:
    def http(**kw: object) -> common_pb2.TaskSpec:
        s = spec()
        s.payload.http.CopyFrom(common_pb2.HttpPayload(**{"url": "https://h.example/", **kw}))  # type: ignore[arg-type]
        return s

    assert refused(http(url="https://h.example/" + "x" * 8192)).field == "spec.payload.http.url"
    assert refused(http(headers={f"H{i}": "v" for i in range(101)})).field == "spec.payload.http.headers"
    assert refused(http(expected_status=[200] * 101)).field == "spec.payload.http.expected_status"


def test_handler_args_nested_too_deeply_are_refused_without_recursion() -> None:
    s = spec()
    s.payload.handler.name = "h"
    s.payload.handler.args_json = '{"a":' * 100_000 + "1" + "}" * 100_000  # json.loads: RecursionError
    e = refused(s)
    assert e.field == "spec.payload.handler.args_json"
    assert "64" in e.problem
    s.payload.handler.args_json = '{"a": "[[[[[[", "b": [[1]]}'
    validate_spec(s)  # brackets inside strings do not count
    assert json_depth('{"a": "\\"[[[", "b": [[1]]}') == 3
    assert json_depth(json.dumps({"a": [[[[]]]]})) == 5


def test_the_sensor_probe_counts_in_max_payload_bytes() -> None:
    s = spec()
    s.sensor.probe.shell.script = "x" * 600
    s.payload.command.argv[:] = ["y" * 600]
    validate_spec(s, max_payload_bytes=1_300)
    e = refused(s, max_payload_bytes=1_000)
    assert e.field == "spec.payload"
    assert "with the sensor's probe" in e.problem
    assert "1000 bytes (scheduler.max_payload_bytes)" in e.problem


def test_apply_checks_the_payload_against_the_ceiling() -> None:
    s = spec()
    s.payload.shell.script = "x" * (validate.MAX_PAYLOAD_CEILING + 1)
    assert refused(s).field == "spec.payload"


@pytest.mark.parametrize(
    ("field", "target"),
    [
        ("spec.notify[0].command.argv", notify_command(argv=["x"] * 257)),
        ("spec.notify[0].command.env", notify_command(argv=["x"], env={f"V{i}": "" for i in range(65)})),
        ("spec.notify[0].command", notify_command(argv=["x", "y" * 17_000])),
        (
            "spec.notify[0].events",
            common_pb2.NotifyTarget(webhook_url="https://h.example/", events=[common_pb2.NOTIFY_FAILURE] * 9),
        ),
    ],
)
def test_notify_target_bounds(field: str, target: common_pb2.NotifyTarget) -> None:
    s = spec()
    s.notify.append(target)
    assert refused(s).field == field


def test_apply_refuses_what_the_leader_refuses() -> None:
    """One function called twice: a spec the leader would refuse, proposed anyway (an older leader, a
    forged entry), is refused by apply with the same field, and changes nothing."""
    kv = MemKV()
    sm = StateMachine(kv)
    bad = spec()
    bad.notify.append(notify_command(argv=["x"] * 257))
    cmd = commands_pb2.Command(
        stamped_at_ms=T0, create_task=commands_pb2.CreateTask(task_id=make_id(T0, b"\1" * 10), spec=bad)
    )
    res = commands_pb2.BatchResult()
    res.ParseFromString(sm.apply_entry(1, encode_batch([cmd])) or b"")
    (r,) = res.results
    assert (r.applied, r.error_code) == (False, "invalid_argument")
    assert r.error.startswith("spec.notify[0].command.argv: at most 256 arguments")
    with kv.read() as txn:
        assert txn.count("tasks") == 0


def test_calendar_bounds() -> None:
    c = common_pb2.Calendar(name="c")
    c.exclude.add().weekdays.days.extend([1, 2, 3, 4, 5, 6, 7, 1])
    with pytest.raises(InvalidArgument, match="at most 7 days") as e:
        cal.validate_calendar(c, known={})
    assert e.value.field == "calendar.exclude[0].weekdays.days"
    big = common_pb2.Calendar(name="big")
    for _ in range(110):
        big.exclude.add().dates.dates.extend(["2026-01-01"] * 1_000)
    with pytest.raises(InvalidArgument, match=f"at most {cal.MAX_CALENDAR_BYTES} bytes"):
        cal.validate_calendar(big, known={})


# ------------------------------------------------------------------------------------------ the wire


def test_request_checks() -> None:
    with pytest.raises(InvalidArgument, match="at most 1000 ids") as e:
        wire.check_ids([make_id(T0, b"\0" * 10)] * 1001, "execution_ids", bounds.MAX_REDRIVE_IDS)
    assert e.value.field == "execution_ids"
    with pytest.raises(InvalidArgument) as e:
        wire.check_ids(["nope"], "execution_ids", 10)
    assert e.value.field == "execution_ids[0]"
    for token in ("1" * 21, "x", str(1 << 64), "١٢"):
        with pytest.raises(InvalidArgument, match="not a token"):
            wire.executions_page_token(token)
    wire.executions_page_token(str((1 << 64) - 1))
    with pytest.raises(InvalidArgument, match="not a calendar name"):
        wire.calendar_name("x" * 65, "name")
    with pytest.raises(InvalidArgument, match=r"between 0 .* and 1000"):
        wire.check_limit(-1, "limit", 1000)


@pytest.mark.parametrize(
    ("hello", "field"),
    [
        (worker_pb2.Hello(worker_id="w" * 129), "hello.worker_id"),
        (worker_pb2.Hello(worker_id="w 1"), "hello.worker_id"),
        (worker_pb2.Hello(worker_id="w", capacity=100_001), "hello.capacity"),
        (worker_pb2.Hello(worker_id="w", capacity=-1), "hello.capacity"),
        (worker_pb2.Hello(worker_id="w", queues=["q"] * 65), "hello.queues"),
        (worker_pb2.Hello(worker_id="w", queues=["-q"]), "hello.queues[0]"),
        (worker_pb2.Hello(worker_id="w", labels={f"k{i}": "" for i in range(65)}), "hello.labels"),
        (worker_pb2.Hello(worker_id="w", labels={"k": "v" * 257}), "hello.labels"),
        (worker_pb2.Hello(worker_id="w", incarnation="i" * 129), "hello.incarnation"),
        (worker_pb2.Hello(worker_id="w", direct=["127.0.0.1:1"] * 65), "hello.direct"),
        (worker_pb2.Hello(worker_id="w", direct=["h" * 513]), "hello.direct"),
    ],
)
def test_hello_bounds(hello: worker_pb2.Hello, field: str) -> None:
    assert wire.hello_problem(hello).startswith(field + ":")


def test_a_workers_hello_is_accepted() -> None:
    hello = worker_pb2.Hello(
        worker_id="host-123", capacity=4, queues=["default", "gpu"], labels={"zone": "a"}
    )
    assert wire.hello_problem(hello) == ""


def test_worker_message_bounds() -> None:
    ref = worker_pb2.LeaseRef(execution_id="x")
    hb = worker_pb2.WorkerMessage(heartbeat=worker_pb2.Heartbeat(leases=[ref] * 100_001))
    assert wire.worker_problem(hb).startswith("heartbeat.leases: at most 100000")
    hb = worker_pb2.WorkerMessage(heartbeat=worker_pb2.Heartbeat(finished=[ref] * 100_001))
    assert wire.worker_problem(hb).startswith("heartbeat.finished")
    many = worker_pb2.WorkerMessage(results=worker_pb2.Results(results=[common_pb2.AttemptResult()] * 10_001))
    assert wire.worker_problem(many).startswith("results.results: at most 10000")
    chunk = worker_pb2.WorkerMessage(output=worker_pb2.OutputChunk(data=b"x" * (1 << 20 | 1)))
    assert wire.worker_problem(chunk).startswith("output.data")
    again = worker_pb2.WorkerMessage(hello=worker_pb2.Hello(worker_id="w"))
    assert wire.worker_problem(again).startswith("hello:")
    assert wire.worker_problem(worker_pb2.WorkerMessage()).startswith("kind:")
    assert wire.worker_problem(worker_pb2.WorkerMessage(heartbeat=worker_pb2.Heartbeat(leases=[ref]))) == ""


def test_results_are_cut_to_what_apply_keeps() -> None:
    r = common_pb2.AttemptResult(
        execution_id="e",
        stdout_tail=b"a" * 10 + b"b" * bounds.MAX_RESULT_TAIL_BYTES,
        stderr_tail=b"short",
        return_value=b"c" * bounds.MAX_RETURN_VALUE_BYTES + b"d",
        error="e" * 5_000,
    )
    (cut,) = wire.bounded_results([r])
    assert cut.stdout_tail == b"b" * bounds.MAX_RESULT_TAIL_BYTES
    assert cut.stderr_tail == b"short"
    assert cut.return_value == b"c" * bounds.MAX_RETURN_VALUE_BYTES
    assert len(cut.error) == bounds.MAX_RESULT_ERROR
    small = common_pb2.AttemptResult(execution_id="e", stdout_tail=b"ok")
    assert wire.bounded_results([small])[0] is small


# ------------------------------------------------------------------------------- pages and messages


def _store_with_big_tasks(n: int, payload_bytes: int) -> MemKV:
    kv = MemKV()
    sm = StateMachine(kv)
    for i in range(n):
        s = spec()
        s.name = f"big{i}"
        s.payload.shell.script = "x" * payload_bytes
        cmd = commands_pb2.Command(
            stamped_at_ms=T0,
            create_task=commands_pb2.CreateTask(task_id=make_id(T0, i.to_bytes(10, "big")), spec=s),
        )
        sm.apply_entry(i + 1, encode_batch([cmd]))
    return kv


def test_a_page_of_tasks_ends_once_it_reaches_max_bytes() -> None:
    from cronraft.raft import state as sm

    kv = _store_with_big_tasks(5, 30_000)
    with kv.read() as txn:
        first, token = sm.list_tasks(txn, page_size=100, max_bytes=64_000)
        assert len(first) == 3 and token  # 30 + 30 + 30 KB: past 64 KB with the third
        rest, end = sm.list_tasks(txn, page_size=100, page_token=token, max_bytes=64_000)
        assert len(rest) == 2 and end == ""
        one, token = sm.list_tasks(txn, page_size=100, max_bytes=1)
        assert len(one) == 1 and token  # always at least one


def test_calendars_come_in_pages() -> None:
    from cronraft.raft import state as sm

    kv = MemKV()
    machine = StateMachine(kv)
    for i in range(5):
        cal_ = common_pb2.Calendar(name=f"c{i}")
        cal_.exclude.add().weekdays.days.append(6)
        cmd = commands_pb2.Command(stamped_at_ms=T0, put_calendar=commands_pb2.PutCalendar(calendar=cal_))
        machine.apply_entry(i + 1, encode_batch([cmd]))
    names: list[str] = []
    token = ""
    with kv.read() as txn:
        while True:
            page, token = sm.calendars_page(txn, page_size=2, page_token=token)
            names += [c.name for c in page]
            if not token:
                break
    assert names == [f"c{i}" for i in range(5)]


def test_lease_offers_are_split_below_max_offer_bytes() -> None:
    from test_leader_backoff import Rig

    rig = Rig()
    rig.core.worker_connected("w1", 8, ["default"], {}, rig.mono)
    due = T0 + 1_000
    for i in range(3):
        s = spec()
        s.name = f"big{i}"
        s.payload.shell.script = "x" * (1_800_000)  # within the 4 MiB ceiling; 3 of them pass 4 MiB
        s.schedule.at.at_ms = due
        s.queue = "default"
        cmd = commands_pb2.Command(
            stamped_at_ms=rig.now,
            create_task=commands_pb2.CreateTask(task_id=make_id(T0, bytes([i]) * 10), spec=s),
        )
        (res,) = rig.apply([cmd])
        assert res.applied, res.error
        rig.core.on_committed([cmd], [res], rig.now, rig.mono)
    rig.run(2)
    offers = [m for _, m in rig.core.drain_outgoing() if m.WhichOneof("kind") == "leases"]
    assert sum(len(m.leases.leases) for m in offers) == 3
    assert len(offers) >= 2
    assert all(m.ByteSize() <= bounds.MAX_OFFER_BYTES for m in offers)


def test_a_worker_refuses_at_start_what_the_leader_would_refuse_in_its_hello(tmp_path: Path) -> None:
    from cronraft.client.worker import WorkerConfig
    from cronraft.errors import ConfigError

    good = {"servers": ("127.0.0.1:1",), "worker_id": "w", "outbox_dir": tmp_path}
    WorkerConfig(**good)  # type: ignore[arg-type]
    for change, text in [
        ({"worker_id": "w" * 129}, "worker_id"),
        ({"worker_id": "a b"}, "worker_id"),
        ({"capacity": 100_001}, "capacity"),
        ({"queues": tuple(f"q{i}" for i in range(65))}, "queues"),
        ({"labels": {f"k{i}": "" for i in range(65)}}, "labels"),
    ]:
        with pytest.raises(ConfigError, match=text):
            WorkerConfig(**{**good, **change})  # type: ignore[arg-type]
