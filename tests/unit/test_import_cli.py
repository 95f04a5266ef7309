"""`schedctl task import` and `Client.import_tasks` against an in-process fake of the ImportTasks RPC."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from cronraft.client import Client
from cronraft.client._bulk import batch_ids
from cronraft.client._render import task_to_json
from cronraft.client.cli import EXIT_OK, EXIT_USAGE, main
from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc
from cronraft.raft.codec import make_id

T0 = 1_767_225_600_000


class FakeImport(scheduler_pb2_grpc.SchedulerServicer):
    """Creates each batch whole (ids first + i), remembers request ids, rejects a spec named "bad"."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.specs: dict[str, common_pb2.TaskSpec] = {}
        self.answers: dict[str, scheduler_pb2.ImportedBatch] = {}
        self.calls = 0
        self.seq = 0

    def ImportTasks(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        self.calls += 1
        out = scheduler_pb2.ImportTasksResponse()
        for b, req in enumerate(request_iterator):
            for i, s in enumerate(req.specs):
                if s.name == "bad":
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"batches[{b}].specs[{i}].name: is bad")
            with self.lock:
                prior = self.answers.get(req.request_id)
                if prior is not None:
                    out.batches.add().CopyFrom(prior)
                    out.batches[-1].replayed = True
                    out.replayed += prior.count
                    continue
                self.seq += 1
                first = make_id(T0, (self.seq << 20).to_bytes(10, "big"))
                for tid, s in zip(batch_ids(first, len(req.specs)), req.specs, strict=True):
                    self.specs[tid] = s
                ans = scheduler_pb2.ImportedBatch(
                    request_id=req.request_id, first_task_id=first, count=len(req.specs)
                )
                self.answers[req.request_id] = ans
                out.batches.add().CopyFrom(ans)
                out.created += ans.count
        return out


@pytest.fixture
def fake() -> Iterator[tuple[FakeImport, str]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = FakeImport()
    scheduler_pb2_grpc.add_SchedulerServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(None).wait()


def _line(n: int, name: str | None = None) -> str:
    spec = {
        "name": name or f"job-{n}",
        "tags": {"n": str(n)},
        "schedule": {"kind": "at", "at_ms": T0 + n},
        "payload": {"kind": "handler", "name": "bench.noop", "args": {}},
    }
    return json.dumps(spec)


def test_import_file_prints_a_summary(
    fake: tuple[FakeImport, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, addr = fake
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(_line(n) for n in range(2_500)) + "\n\n")
    code = main(["--server", addr, "task", "import", str(path), "--batch-size", "100"])
    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    assert "imported 2,500 tasks" in out and "2,500 created" in out and "import id: " in out
    assert len(servicer.specs) == 2_500
    assert sorted(s.tags["n"] for s in servicer.specs.values()) == sorted(str(n) for n in range(2_500))
    assert servicer.calls == 1  # 25 batches: one segment


def test_import_json_summary_and_resume_with_the_import_id(
    fake: tuple[FakeImport, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, addr = fake
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(_line(n) for n in range(30)))
    args = ["--server", addr, "-o", "json", "task", "import", str(path), "--batch-size", "10"]
    assert main([*args, "--import-id", "imp1"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["created"] == 30 and doc["replayed"] == 0 and doc["import_id"] == "imp1"
    assert [b["request_id"] for b in doc["batches"]] == ["imp1-0", "imp1-1", "imp1-2"]
    assert main([*args, "--import-id", "imp1"]) == EXIT_OK
    again = json.loads(capsys.readouterr().out)
    assert again["created"] == 0 and again["replayed"] == 30
    assert len(servicer.specs) == 30


def test_a_bad_line_stops_the_import_naming_the_line(
    fake: tuple[FakeImport, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, addr = fake
    lines = [_line(n) for n in range(5)]
    lines[3] = lines[3].replace('"kind": "at"', '"kind": "sometimes"')
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(lines))
    assert main(["--server", addr, "task", "import", str(path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "error: line 4: spec.schedule.kind: expected cron, at, fixed_rate or fixed_delay" in err
    assert servicer.specs == {}


def test_a_server_side_rejection_is_reported(
    fake: tuple[FakeImport, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, addr = fake
    path = tmp_path / "tasks.jsonl"
    path.write_text(_line(0, "bad"))
    assert main(["--server", addr, "task", "import", str(path)]) == EXIT_USAGE
    assert "batches[0].specs[0].name: is bad" in capsys.readouterr().err


def test_import_reads_stdin(
    fake: tuple[FakeImport, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, addr = fake
    task = common_pb2.Task(task_id=make_id(T0, b"\1" * 10), state=common_pb2.TASK_SCHEDULED)
    task.spec.name = "from-get"
    task.spec.schedule.cron.expression = "*/5 * * * *"
    task.spec.payload.command.argv.append("true")
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(task_to_json(task)) + "\n"))
    assert main(["--server", addr, "task", "import", "-", "--quiet"]) == EXIT_OK
    (spec,) = servicer.specs.values()
    assert spec == task.spec


def test_sdk_import_tasks_returns_every_id(fake: tuple[FakeImport, str]) -> None:
    servicer, addr = fake
    specs = [common_pb2.TaskSpec(name=f"s{i}") for i in range(250)]
    seen: list[int] = []
    with Client(addr) as client:
        result = client.import_tasks(iter(specs), batch_size=50, on_progress=lambda r: seen.append(r.total))
    assert result.created == 250 and seen == [250]
    ids = list(result.task_ids())
    assert [servicer.specs[i].name for i in ids] == [f"s{i}" for i in range(250)]
    with Client(addr) as client, pytest.raises(InvalidArgument):
        client.import_tasks([common_pb2.TaskSpec(name="bad")])
