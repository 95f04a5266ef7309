"""The audit trail inside apply (raft.audit_trail): one record per command carrying `Command.audit`, built
from the entry alone with the command's outcome; none for the leader's own commands; pruned by the
Prune command by age and count within its budget; listed with filters and pages. Also the daemon's
pieces that need no server: the [retention] keys and the stamp of Node.propose.
(tests/unit/test_audit.py is the fault checker's event log, raft.audit: another thing.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cronraft.daemon import retention as duty
from cronraft.daemon.config import RetentionConfig
from cronraft.daemon.services import audit as audit_api
from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import audit_pb2, commands_pb2, common_pb2
from cronraft.raft import audit_trail
from cronraft.raft.codec import encode_batch, make_id
from cronraft.raft.kv import KV, MemKV
from cronraft.raft.state import StateMachine
from cronraft.raft.store import LmdbKV

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY = 86_400_000
Command = commands_pb2.Command


@pytest.fixture(params=["mem", "lmdb"])
def kv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KV]:
    store: KV = MemKV() if request.param == "mem" else LmdbKV(tmp_path / "db", map_size=64 << 20)
    yield store
    store.close()


class Log:
    def __init__(self, kv: KV | None = None, **kw: object) -> None:
        self.sm = StateMachine(kv or MemKV(), **kw)  # type: ignore[arg-type]
        self.index = 0

    def apply(self, *cmds: Command) -> list[commands_pb2.CommandResult]:
        self.index += 1
        raw = self.sm.apply_entry(self.index, encode_batch(cmds))
        assert raw is not None
        out = commands_pb2.BatchResult()
        out.ParseFromString(raw)
        return list(out.results)

    def records(self, **filters: object) -> list[audit_pb2.AuditRecord]:
        with self.sm.kv.read() as txn:
            recs, token = audit_trail.list_records(txn, page_size=1000, **filters)  # type: ignore[arg-type]
        assert token == ""
        return recs


def tid(n: int) -> str:
    return make_id(T0, n.to_bytes(10, "big"))


def spec(name: str = "t") -> common_pb2.TaskSpec:
    return common_pb2.TaskSpec(
        name=name,
        schedule=common_pb2.Schedule(cron=common_pb2.CronSchedule(expression="0 0 1 1 *")),
        payload=common_pb2.Payload(command=common_pb2.CommandPayload(argv=["true"])),
    )


def who(principal: str = "alice", method: str = "CreateTask") -> audit_pb2.AuditMeta:
    return audit_pb2.AuditMeta(principal=principal, peer="ipv4:10.0.0.7:5000", method=method)


def create(n: int, at: int = T0, *, principal: str = "alice", rid: str = "") -> Command:
    return Command(
        request_id=f"create:{rid}" if rid else "",
        stamped_at_ms=at,
        audit=who(principal),
        create_task=commands_pb2.CreateTask(task_id=tid(n), spec=spec()),
    )


def pause(n: int, at: int, principal: str = "bob") -> Command:
    return Command(
        stamped_at_ms=at, audit=who(principal, "PauseTask"), pause_task=commands_pb2.PauseTask(task_id=tid(n))
    )


def prune(at: int, *, max_deletes: int = 1000, **defaults: int) -> Command:
    return Command(
        stamped_at_ms=at,
        prune=commands_pb2.Prune(
            defaults=commands_pb2.RetentionPolicy(**defaults), max_deletes=max_deletes, max_visits=1000
        ),
    )


# ------------------------------------------------------------------------------------ the records


def test_a_client_command_leaves_one_record_from_the_entry_alone(kv: KV) -> None:
    log = Log(kv)
    (res,) = log.apply(create(1, T0 + 5, rid="r-1"))
    assert res.applied
    (rec,) = log.records()
    assert rec == audit_pb2.AuditRecord(
        time_ms=T0 + 5,
        raft_index=1,
        position=0,
        principal="alice",
        peer="ipv4:10.0.0.7:5000",
        method="CreateTask",
        request_id="r-1",  # the client's id, without the servicer's "create:" prefix
        target_ids=[tid(1)],
        outcome="ok",
    )


def test_a_refused_command_is_recorded_with_its_error_code_and_changes_nothing_else(kv: KV) -> None:
    log = Log(kv)
    (res,) = log.apply(pause(9, T0))
    assert res.error_code == "not_found"
    (rec,) = log.records()
    assert (rec.method, rec.principal, rec.outcome, list(rec.target_ids)) == (
        "PauseTask",
        "bob",
        "not_found",
        [tid(9)],
    )
    assert rec.error == res.error[: audit_trail.MAX_ERROR]


def test_the_leaders_own_commands_leave_no_record(kv: KV) -> None:
    log = Log(kv)
    log.apply(Command(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=1, leader_id="n1")))
    log.apply(Command(stamped_at_ms=T0, create_task=commands_pb2.CreateTask(task_id=tid(1), spec=spec())))
    log.apply(prune(T0 + 1, audit_max_records=1))
    assert log.records() == []


def test_every_command_of_an_entry_gets_its_position_and_a_duplicate_is_recorded_with_its_answer(
    kv: KV,
) -> None:
    log = Log(kv)
    log.apply(create(1, T0, rid="x"), create(2, T0), pause(1, T0))
    (again,) = log.apply(create(1, T0 + 10, rid="x"))  # a retried request: answered from the dedup table
    assert again.applied
    recs = log.records()
    assert [(r.raft_index, r.position, r.method, r.outcome) for r in recs] == [
        (1, 0, "CreateTask", "ok"),
        (1, 1, "CreateTask", "ok"),
        (1, 2, "PauseTask", "ok"),
        (2, 0, "CreateTask", "ok"),
    ]


def test_a_command_that_fails_inside_apply_is_recorded_once_as_internal(kv: KV) -> None:
    def fault(cmd: Command) -> None:
        if cmd.WhichOneof("body") == "pause_task":
            raise ValueError("boom")

    log = Log(kv, fault=fault)
    res = log.apply(create(1, T0), pause(1, T0), create(2, T0))  # unguarded, then again with savepoints
    assert [r.error_code for r in res] == ["", "internal", ""]
    recs = log.records()
    assert [(r.position, r.outcome) for r in recs] == [(0, "ok"), (1, "internal"), (2, "ok")]
    assert "ValueError: boom" in recs[1].error


def test_the_same_log_gives_the_same_trail_in_memory_and_in_lmdb(tmp_path: Path) -> None:
    mem, disk = Log(MemKV()), Log(LmdbKV(tmp_path / "db", map_size=64 << 20))
    entries = [[create(1, T0)], [pause(1, T0 + 1), pause(7, T0 + 2)], [prune(T0 + 3, audit_max_records=2)]]
    for cmds in entries:
        mem.apply(*cmds)
        disk.apply(*cmds)
    with mem.sm.kv.read() as a, disk.sm.kv.read() as b:
        assert list(a.scan(audit_trail.DB)) == list(b.scan(audit_trail.DB))
    assert len(mem.records()) == 2


def test_targets_of_each_kind_of_write() -> None:
    ids = [tid(n) for n in range(20)]
    redrive = Command(redrive_dead_letters=commands_pb2.RedriveDeadLetters(execution_ids=ids))
    calendar = Command(put_calendar=commands_pb2.PutCalendar(calendar=common_pb2.Calendar(name="holidays")))
    trigger = Command(trigger_task=commands_pb2.TriggerTask(task_id=ids[0], execution_id=ids[1]))
    imported = Command(import_tasks=commands_pb2.ImportTasks(first_task_id=ids[0], specs=[spec()] * 5))
    assert audit_trail.targets(calendar) == ["holidays"]
    assert audit_trail.targets(trigger) == ids[:2]
    assert audit_trail.targets(Command(delete_calendar=commands_pb2.DeleteCalendar(name="c"))) == ["c"]
    rec = audit_trail.build(3, 0, redrive, commands_pb2.CommandResult(applied=True))
    assert list(rec.target_ids) == ids[: audit_trail.MAX_TARGETS]
    assert rec.targets_omitted == 20 - audit_trail.MAX_TARGETS
    rec = audit_trail.build(3, 0, imported, commands_pb2.CommandResult(applied=True))
    assert (list(rec.target_ids), rec.targets_omitted) == ([ids[0]], 4)


# ------------------------------------------------------------------------------------- retention


def test_prune_deletes_records_past_their_age_and_reports_when_the_next_goes(kv: KV) -> None:
    log = Log(kv)
    for n in range(4):
        log.apply(create(n, T0 + n * DAY))
    (res,) = log.apply(prune(T0 + 3 * DAY, audit_max_age_ms=2 * DAY))
    assert res.pruned.audit_records == 2  # stamped at T0 and T0 + 1 day: at least 2 days old
    assert res.pruned.next_ms == T0 + 2 * DAY + 2 * DAY
    assert [r.time_ms for r in log.records()] == [T0 + 2 * DAY, T0 + 3 * DAY]


def test_prune_keeps_the_newest_records_within_the_count_and_its_budget(kv: KV) -> None:
    log = Log(kv)
    for n in range(10):
        log.apply(create(n, T0 + n))
    (res,) = log.apply(prune(T0 + 100, max_deletes=3, audit_max_records=4))
    assert (res.pruned.audit_records, res.pruned.more) == (3, True)
    (res,) = log.apply(prune(T0 + 101, max_deletes=3, audit_max_records=4))
    assert res.pruned.audit_records == 3
    assert [r.time_ms for r in log.records()] == [T0 + n for n in range(6, 10)]
    (res,) = log.apply(prune(T0 + 102, audit_max_records=4))
    assert res.pruned.audit_records == 0


def test_no_limit_keeps_every_record(kv: KV) -> None:
    log = Log(kv)
    for n in range(3):
        log.apply(create(n, T0 + n))
    (res,) = log.apply(prune(T0 + 400 * DAY))
    assert res.pruned.audit_records == 0
    assert len(log.records()) == 3


def test_the_retention_keys_reach_the_prune_command() -> None:
    cfg = RetentionConfig()
    assert (cfg.audit_max_age_s, cfg.audit_max_records) == (90 * 86_400, 100_000)
    policy = duty.policy(RetentionConfig(audit_max_age_s=60, audit_max_records=7))
    assert (policy.audit_max_age_ms, policy.audit_max_records) == (60_000, 7)


# --------------------------------------------------------------------------------------- listing


def _mixed_log() -> Log:
    log = Log()
    log.apply(create(1, T0, principal="alice"), create(2, T0 + 1, principal="bob"))
    log.apply(pause(1, T0 + 2, "bob"), pause(2, T0 + 3, "alice"))
    log.apply(pause(1, T0 + 4, "alice"))
    return log


def test_filters_on_principal_method_time_and_target() -> None:
    log = _mixed_log()
    assert [r.time_ms - T0 for r in log.records(principal="alice")] == [0, 3, 4]
    assert [r.time_ms - T0 for r in log.records(method="PauseTask")] == [2, 3, 4]
    assert [r.time_ms - T0 for r in log.records(since_ms=T0 + 1, until_ms=T0 + 4)] == [1, 2, 3]
    assert [r.time_ms - T0 for r in log.records(target_id=tid(1))] == [0, 2, 4]
    assert [r.time_ms - T0 for r in log.records(principal="bob", method="PauseTask")] == [2]


def test_pages_resume_after_their_token_and_a_scan_limit_gives_a_short_page() -> None:
    log = _mixed_log()
    seen: list[int] = []
    token = ""
    with log.sm.kv.read() as txn:
        while True:
            recs, token = audit_trail.list_records(txn, page_size=2, page_token=token)
            seen += [r.time_ms - T0 for r in recs]
            if not token:
                break
        assert seen == [0, 1, 2, 3, 4]
        recs, token = audit_trail.list_records(txn, principal="bob", method="PauseTask", scan_limit=2)
        assert (recs, bool(token)) == ([], True)  # two read, neither matched: continue with the token
        recs, token = audit_trail.list_records(
            txn, principal="bob", method="PauseTask", scan_limit=2, page_token=token
        )
        assert [r.time_ms - T0 for r in recs] == [2]
        with pytest.raises(InvalidArgument, match="page_token"):
            audit_trail.list_records(txn, page_token="zz")


def test_propose_stamps_who_asked_outside_an_rpc_as_unknown_method() -> None:
    cmds = [Command(stamped_at_ms=T0), Command(stamped_at_ms=T0)]
    audit_api.stamp(cmds)
    assert [c.audit.principal for c in cmds] == ["anonymous", "anonymous"]  # authentication off
    assert cmds[0].audit.method == "" and cmds[0].audit.peer == ""


def test_the_interceptor_tracks_the_writes_only() -> None:
    assert audit_api.audited_method("/cronraft.v1.Scheduler/CreateTask")
    assert audit_api.audited_method("/cronraft.v1.Scheduler/PurgeDeadLetters")
    assert not audit_api.audited_method("/cronraft.v1.Scheduler/ListTasks")
    assert not audit_api.audited_method("/cronraft.v1.WorkerGateway/Connect")
    assert not audit_api.audited_method("/cronraft.v1.Cluster/Clock")
    assert not audit_api.audited_method("/grpc.health.v1.Health/Check")


# ------------------------------------------------------------------------------------------ client


class _FakeClient:
    def __init__(self, records: list[audit_pb2.AuditRecord]) -> None:
        self.records = records
        self.asked: dict[str, object] = {}

    def list_audit(self, **kw: object) -> list[audit_pb2.AuditRecord]:
        self.asked = kw
        return self.records


def test_schedctl_audit_list_passes_the_filters_and_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from cronraft.client.cli import audit as audit_cli
    from cronraft.client.cli import parse_args

    rec = audit_pb2.AuditRecord(
        time_ms=T0, raft_index=7, principal="alice", method="DeleteTask", target_ids=[tid(1)], outcome="ok"
    )
    fake = _FakeClient([rec])
    args = parse_args(
        [
            "audit",
            "list",
            "--principal",
            "alice",
            "--since",
            "2026-01-01T00:00:00Z",
            "--limit",
            "5",
            "-o",
            "json",
        ]
    )
    assert args.handler is audit_cli.run_list
    audit_cli.run_list(fake, args)
    assert fake.asked == {
        "principal": "alice",
        "method": "",
        "since": T0,
        "until": None,
        "target_id": "",
        "limit": 5,
    }
    (doc,) = json.loads(capsys.readouterr().out)
    assert (doc["time"], doc["principal"], doc["method"], doc["targets"]) == (
        "2026-01-01T00:00:00.000Z",
        "alice",
        "DeleteTask",
        [tid(1)],
    )
    args = parse_args(["audit", "list"])
    audit_cli.run_list(fake, args)
    assert "DeleteTask" in capsys.readouterr().out


# ------------------------------------------------------------------------------ snapshot and digest


def test_a_snapshot_carries_the_trail_and_the_digest_covers_it(tmp_path: Path) -> None:
    from cronraft.raft.digest import digest

    source = Log(LmdbKV(tmp_path / "a", map_size=64 << 20))
    source.apply(create(1, T0), pause(1, T0 + 1))
    image = tmp_path / "snapshot.mdb"
    assert isinstance(source.sm.kv, LmdbKV)
    source.sm.kv.copy_to(image)
    restored = LmdbKV(tmp_path / "b", map_size=64 << 20)
    restored.replace_from(image)
    with source.sm.kv.read() as a, restored.read() as b:
        assert list(a.scan(audit_trail.DB)) == list(b.scan(audit_trail.DB))
        assert len(list(b.scan(audit_trail.DB))) == 2
    restored.close()
    before = digest(tmp_path / "b")
    # The same state but one audit record less: another digest.
    other = Log(LmdbKV(tmp_path / "c", map_size=64 << 20))
    unaudited = pause(1, T0 + 1)
    unaudited.ClearField("audit")
    other.apply(create(1, T0), unaudited)
    other.sm.kv.close()
    source.sm.kv.close()
    assert digest(tmp_path / "a") == before
    assert digest(tmp_path / "c")["digest"] != before["digest"]


def test_a_snapshot_image_of_an_older_version_without_the_trail_is_installed(tmp_path: Path) -> None:
    import lmdb

    from cronraft.raft.kv import ADDED_LATER, DATABASES

    old = tmp_path / "old"
    old.mkdir()
    env = lmdb.open(str(old), max_dbs=len(DATABASES), map_size=64 << 20)
    with env.begin(write=True) as txn:
        for name in DATABASES:
            if name not in ADDED_LATER:
                env.open_db(name.encode(), txn=txn, create=True)
    env.copy(str(tmp_path), compact=True)  # writes tmp_path/data.mdb
    env.close()
    store = LmdbKV(tmp_path / "new", map_size=64 << 20)
    store.replace_from(tmp_path / "data.mdb")
    with store.read() as txn:
        assert list(txn.scan(audit_trail.DB)) == []  # created empty on open
    store.close()
