"""Workers and secrets with real processes (issue 13): a worker credential connects as its own worker id
only; a result or a log line forged on another worker's stream (with the victim's real fencing token,
read by an operator) is refused and changes nothing; readers and submitters see `<redacted>` where
operators see stored secrets, and a read-modify-write by a submitter keeps them; a plaintext client
against a TLS node is told it may need TLS."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cronraft.client import Client, at, command, every, http
from cronraft.client._transport import TLS_HINT, Transport
from cronraft.errors import InvalidArgument, Unavailable
from cronraft.proto.v1 import common_pb2, worker_pb2, worker_pb2_grpc
from cronraft.tokenfile import add_token

from .harness import Cluster, wait_for
from .test_security_transport import SecureCluster, _client, _secure_cluster

pytestmark = pytest.mark.integration
REDACTED = "<redacted>"


def _cluster(tmp_path: Path, clusters: list[Cluster]) -> tuple[SecureCluster, dict[str, str], Path]:
    """A TLS + token node, with tokens for w1 (in `_secure_cluster`), w2 and an operator too."""
    c, tokens, ca = _secure_cluster(tmp_path)
    now_ms = int(time.time() * 1000)
    tokens["w2"] = add_token(tmp_path / "tokens.toml", "w2", ["worker"], now_ms=now_ms)
    tokens["operator"] = add_token(tmp_path / "tokens.toml", "operator-user", ["operator"], now_ms=now_ms)
    clusters.append(c)
    c.start()
    return c, tokens, ca


class RawWorker:
    """A worker stream driven by hand: the Hello, then whatever the test sends."""

    def __init__(self, address: str, ca: Path, token: str, worker_id: str) -> None:
        self._channel = Transport(ca=ca.read_bytes(), token=token).channel(address)
        self._out: queue.Queue[worker_pb2.WorkerMessage | None] = queue.Queue()
        # A queue nobody submits to: this stream is offered no lease.
        hello = worker_pb2.Hello(worker_id=worker_id, capacity=1, queues=["raw-nothing"])
        self._out.put(worker_pb2.WorkerMessage(hello=hello))
        self.replies = worker_pb2_grpc.WorkerGatewayStub(self._channel).Connect(self._requests(), timeout=30)

    def _requests(self) -> Iterator[worker_pb2.WorkerMessage]:
        while (msg := self._out.get()) is not None:
            yield msg

    def send(self, msg: worker_pb2.WorkerMessage) -> None:
        self._out.put(msg)

    def end(self) -> grpc.RpcError:
        """Read the stream to its end; the error it ended with."""
        try:
            for _ in self.replies:
                pass
        except grpc.RpcError as e:
            return e
        finally:
            self._out.put(None)
            self._channel.close()
        raise AssertionError("the stream ended without an error")

    def welcomed(self) -> None:
        first = next(iter(self.replies))
        assert first.WhichOneof("kind") == "welcome", first


def test_a_worker_token_connects_as_its_own_worker_id_only(tmp_path: Path, clusters: list[Cluster]) -> None:
    c, tokens, ca = _cluster(tmp_path, clusters)
    address = c.nodes[0].grpc_address
    # w1's token under the id w2: refused, naming both.
    impostor = RawWorker(address, ca, tokens["worker"], "w2")
    e = impostor.end()
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'w2' is not this stream's principal 'w1'" in str(e.details())
    # Under its own id it is welcomed.
    honest = RawWorker(address, ca, tokens["worker"], "w1")
    honest.welcomed()
    # Two instances of the credential at once (replicas of one Deployment): each its own worker.
    replicas = [RawWorker(address, ca, tokens["worker"], f"w1#pod-{i}") for i in range(2)]
    for replica in replicas:
        replica.welcomed()
    # An instance of another principal is not this credential's.
    e = RawWorker(address, ca, tokens["worker"], "w2#pod-0").end()
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED and "'w2#pod-0'" in str(e.details())
    for worker in (honest, *replicas):
        worker._out.put(None)
        worker._channel.close()
    # A real schedworker started under another id than its token's is refused and says why.
    c.start_worker("w9", extra_args=("--tls-ca", str(ca)), env={"CRONRAFT_TOKEN": tokens["worker"]})
    log = tmp_path / "w9.log"
    wait_for(lambda: log.exists() and "is not this stream's principal" in log.read_text(), 30, "w9 refused")


def _running_execution(c: SecureCluster, ca: Path, tokens: dict[str, str], tmp_path: Path) -> tuple[str, str]:
    """A real worker w1 running a task that prints a line, waits for a file, prints another: (task id,
    execution id) once it runs."""
    c.start_worker("w1", extra_args=("--tls-ca", str(ca)), env={"CRONRAFT_TOKEN": tokens["worker"]})
    go = tmp_path / "go"
    script = f"echo real-line; while [ ! -e {go} ]; do sleep 0.1; done; echo real-end"
    with _client(c, ca, tokens["submitter"]) as submitter:
        task = submitter.create_task(
            "victim", at(int(time.time() * 1000)), command("sh", "-c", script), max_attempts=1
        )
    with _client(c, ca, tokens["operator"]) as operator:

        def running() -> str | None:
            for e in operator.list_executions(task.task_id):
                if e.state == common_pb2.EXECUTION_RUNNING and e.HasField("token"):
                    return e.execution_id
            return None

        execution_id = wait_for(running, 30, "the execution running on w1")
    return task.task_id, execution_id


def test_forged_results_and_log_lines_from_another_stream_change_nothing(
    tmp_path: Path, clusters: list[Cluster]
) -> None:
    c, tokens, ca = _cluster(tmp_path, clusters)
    _task_id, execution_id = _running_execution(c, ca, tokens, tmp_path)
    address = c.nodes[0].grpc_address
    with _client(c, ca, tokens["reader"]) as reader:
        assert not reader.get_execution(execution_id).HasField("token")  # readers are not shown it
    with _client(c, ca, tokens["operator"]) as operator:
        victim = operator.get_execution(execution_id)
    assert victim.worker_id == "w1" and victim.HasField("token")
    token = victim.token  # the real, current token: still not enough to act
    # A log line on w2's stream, with the victim's token: the stream is ended, nothing is stored.
    thief = RawWorker(address, ca, tokens["w2"], "w2")
    thief.welcomed()
    chunk = worker_pb2.OutputChunk(
        execution_id=execution_id, token=token, stream=worker_pb2.STDOUT, data=b"forged-line\n"
    )
    thief.send(worker_pb2.WorkerMessage(output=chunk))
    e = thief.end()
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "held by worker 'w1', not 'w2'" in str(e.details())
    # A result on another w2 stream: refused the same way, never applied.
    thief = RawWorker(address, ca, tokens["w2"], "w2")
    thief.welcomed()
    forged = common_pb2.AttemptResult(
        execution_id=execution_id,
        token=token,
        outcome=common_pb2.ATTEMPT_FAILED,
        exit_code=66,
        stdout_tail=b"forged-result\n",
        finished_at_ms=int(time.time() * 1000),
    )
    thief.send(worker_pb2.WorkerMessage(results=worker_pb2.Results(results=[forged])))
    e = thief.end()
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "result for execution" in str(e.details())
    with _client(c, ca, tokens["operator"]) as operator:
        assert operator.get_execution(execution_id).state == common_pb2.EXECUTION_RUNNING
        (tmp_path / "go").touch()  # the real attempt ends now

        def ended() -> common_pb2.Execution | None:
            ex = operator.get_execution(execution_id)
            return ex if ex.state != common_pb2.EXECUTION_RUNNING else None

        ex = wait_for(ended, 30, "the real attempt to end")
        assert ex.state == common_pb2.EXECUTION_SUCCEEDED and ex.exit_code == 0
        assert b"forged" not in ex.stdout_tail and b"real-end" in ex.stdout_tail
        assert [a.worker_id for a in ex.attempts] == ["w1"]

        def logs() -> bytes | None:
            page = operator.get_execution_logs(execution_id)
            return page.stdout if b"real-end" in page.stdout else None

        stored = wait_for(logs, 10, "the real output in the log")
        assert b"forged" not in stored and b"real-line" in stored
    node_log = c.nodes[0].log_path.read_text()
    assert "forged worker message refused" in node_log


def test_secrets_are_redacted_for_readers_and_submitters_and_survive_their_updates(
    tmp_path: Path, clusters: list[Cluster]
) -> None:
    c, tokens, ca = _cluster(tmp_path, clusters)
    payload = command("backup", env={"DB_PASSWORD": "hunter2", "DB_USER": "secret:db-user"})
    probe = http("https://api.example/ready", headers={"Authorization": "Bearer t0ken"})
    with _client(c, ca, tokens["operator"]) as operator:
        task = operator.create_task("backup", every("1h"), payload)
        shown = operator.get_task(task.task_id)
        assert shown.spec.payload.command.env["DB_PASSWORD"] == "hunter2"
        spec = common_pb2.TaskSpec()
        spec.CopyFrom(shown.spec)
        spec.sensor.probe.CopyFrom(probe)
        operator.update_task(task.task_id, spec)
    for role in ("reader", "submitter"):
        with _client(c, ca, tokens[role]) as client:
            for seen in (client.get_task(task.task_id), *client.list_tasks()):
                assert seen.spec.payload.command.env["DB_PASSWORD"] == REDACTED
                assert seen.spec.payload.command.env["DB_USER"] == "secret:db-user"
                assert seen.spec.sensor.probe.http.headers["Authorization"] == REDACTED
    # The CLI's JSON export is what the API returned.
    env = {**os.environ, "CRONRAFT_SERVER": c.servers, "CRONRAFT_TLS_CA": str(ca)}
    schedctl = [sys.executable, "-m", "cronraft.client.cli"]
    out = subprocess.run(
        [*schedctl, "--token", tokens["reader"], "task", "get", task.task_id, "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert REDACTED in out and "hunter2" not in out and "t0ken" not in out
    # A submitter's read-modify-write (SDK and schedctl) keeps the stored values...
    with _client(c, ca, tokens["submitter"]) as submitter:
        edited = submitter.edit_task(task.task_id, tags={"team": "data"})
        assert edited.spec.payload.command.env["DB_PASSWORD"] == REDACTED  # its reply is redacted too
        subprocess.run(
            [*schedctl, "--token", tokens["submitter"], "task", "update", task.task_id, "--tag", "tier=1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        # ...but a payload changed around a placeholder is refused, naming the field.
        with pytest.raises(InvalidArgument, match=r"spec\.payload\.command\.env\.DB_PASSWORD"):
            submitter.edit_task(
                task.task_id,
                payload=command(
                    "sh",
                    "-c",
                    "echo $DB_PASSWORD",
                    env={"DB_PASSWORD": REDACTED, "DB_USER": "secret:db-user"},
                ),
            )
        # A placeholder is not a value to create a task with.
        with pytest.raises(InvalidArgument, match="placeholder"):
            submitter.create_task("copy", every("1h"), command("backup", env={"DB_PASSWORD": REDACTED}))
    with _client(c, ca, tokens["operator"]) as operator:
        stored = operator.get_task(task.task_id)
    assert stored.spec.payload.command.env["DB_PASSWORD"] == "hunter2"
    assert stored.spec.sensor.probe.http.headers["Authorization"] == "Bearer t0ken"
    assert dict(stored.spec.tags) == {"team": "data", "tier": "1"}


def test_a_plaintext_client_is_told_the_server_may_require_tls(
    tmp_path: Path, clusters: list[Cluster]
) -> None:
    c, tokens, _ca = _cluster(tmp_path, clusters)
    with Client(c.servers, timeout_s=2, transport=Transport()) as plain, pytest.raises(Unavailable) as e:
        list(plain.list_tasks())
    assert str(e.value).endswith(f"({TLS_HINT})") and "Socket closed" in str(e.value)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONRAFT_TLS")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cronraft.client.cli",
            "--server",
            c.servers,
            "--rpc-timeout",
            "2s",
            "task",
            "list",
        ],
        env={**env, "CRONRAFT_TOKEN": tokens["reader"]},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert "--tls-ca" in done.stderr and "CRONRAFT_TLS_CA" in done.stderr
