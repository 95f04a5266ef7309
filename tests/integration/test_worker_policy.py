"""What runs where (issue 13), with real processes: the API refuses notify commands and unconfigured
notifiers; a worker's policy refuses what it does not allow (its execution ends `failed` with the reason,
not retried), keeps CRONRAFT_* out of payloads, resolves `secret:NAME` locally and applies its rlimits;
a node's data directory is private."""

from __future__ import annotations

import json
import stat
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cronraft.client import Client, at, command, notifier, shell
from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import common_pb2

from .harness import Cluster, wait_for

pytestmark = pytest.mark.integration

STRICT = "strict"  # the queue of a worker with the default policy
CONFIGURED = "configured"  # the queue of a worker with a policy file


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory, module_clusters: list[Cluster]) -> Cluster:
    """One node and its two workers for the module: each test uses its own task names."""
    tmp_path = tmp_path_factory.mktemp("worker-policy")
    marker = tmp_path / "paged.json"
    page = [sys.executable, "-c", f"import sys; open({str(marker)!r}, 'wb').write(sys.stdin.buffer.read())"]
    toml = (
        "[notify]\n"
        'webhook_hosts = ["hooks.example.com"]\n\n'
        "[notifiers.page]\n"
        'kind = "command"\n'
        f"argv = {json.dumps(page)}\n"
    )
    c = Cluster(tmp_path, n=1, extra_toml=toml)
    module_clusters.append(c)
    c.start()
    # The default policy: no flags at all (the harness's default flags enable shell and loopback HTTP).
    c.start_worker("strict-worker", extra_args=("--queue", STRICT), policy_args=())
    policy = tmp_path / "policy.toml"
    policy.write_text(
        "[payloads]\n"
        f'executables = [{json.dumps(sys.executable)}, "/bin/sh"]\n'
        "[limits]\n"
        "open_files = 77\n"
        "[secrets.values]\n"
        'api_key = "k-from-the-worker"\n'
    )
    policy.chmod(0o600)
    c.start_worker(
        "configured-worker",
        extra_args=("--queue", CONFIGURED),
        policy_args=("--policy", str(policy)),
        env={"CRONRAFT_TOKEN": "worker-token-must-not-leak", "WORKER_ONLY": "not-inherited"},
    )
    c.wait_workers(2)
    return c


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    return module_cluster


class Hook:
    """A loopback HTTP endpoint that counts requests."""

    def __init__(self) -> None:
        hits: list[str] = []
        self.hits = hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/internal"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _soon() -> common_pb2.Schedule:
    return at(int(time.time() * 1000) + 300)


def _final(client: Client, task_id: str) -> common_pb2.Execution:
    active = (common_pb2.EXECUTION_PENDING, common_pb2.EXECUTION_RUNNING, common_pb2.EXECUTION_BUFFERED)

    def done() -> common_pb2.Execution | None:
        executions = list(client.list_executions(task_id))
        if len(executions) != 1:
            return None
        ex = client.get_execution(executions[0].execution_id)
        return ex if ex.state not in active else None

    return wait_for(done, 60, "a final state")


def _run(
    client: Client, name: str, payload: common_pb2.Payload, queue: str, **kw: object
) -> common_pb2.Execution:
    task = client.create_task(name, _soon(), payload, queue=queue, **kw)  # type: ignore[arg-type]
    return _final(client, task.task_id)


def test_the_api_refuses_notify_commands_and_unconfigured_targets(cluster: Cluster) -> None:
    with Client(cluster.servers, timeout_s=30) as client:
        spec = common_pb2.TaskSpec(name="sneaky", schedule=_soon(), payload=command("true"), queue=STRICT)
        spec.notify.add().command.argv.extend(["/bin/sh", "-c", "id > /tmp/pwned"])
        with pytest.raises(InvalidArgument) as info:
            client.create_task_spec(spec)
        assert info.value.field == "spec.notify[0].command"
        assert "may not carry a notify command" in info.value.problem
        del spec.notify[:]
        spec.notify.add(webhook_url="http://169.254.169.254/latest/meta-data")
        with pytest.raises(InvalidArgument) as info:
            client.create_task_spec(spec)
        assert info.value.field == "spec.notify[0].webhook_url" and "webhook_hosts" in info.value.problem
        del spec.notify[:]
        spec.notify.append(notifier("nobody-configured-this"))
        with pytest.raises(InvalidArgument) as info:
            client.create_task_spec(spec)
        assert info.value.field == "spec.notify[0].notifier" and "(page)" in info.value.problem
        # Allowed: an allowed webhook host, and the configured notifier, which runs when the task fails.
        del spec.notify[:]
        spec.notify.add(webhook_url="https://hooks.example.com/x", events=[common_pb2.NOTIFY_MISSED])
        spec.notify.append(notifier("page", ["failure"]))
        spec.payload.CopyFrom(command("false"))
        task = client.create_task_spec(spec)
        assert _final(client, task.task_id).state == common_pb2.EXECUTION_FAILED
    paged = cluster.root / "paged.json"  # written by the notifier command of the cluster's config
    body: bytes = wait_for(lambda: paged.read_bytes() if paged.exists() else None, 30, "the page command")
    assert json.loads(body)["task"]["task_id"] == task.task_id


def test_the_default_policy_refuses_loopback_http_and_shell_without_retrying(cluster: Cluster) -> None:
    hook = Hook()
    retry = common_pb2.RetryPolicy(initial_backoff_ms=100)
    try:
        with Client(cluster.servers, timeout_s=30) as client:
            http = common_pb2.Payload(http=common_pb2.HttpPayload(url=hook.url))
            ex = _run(client, "to-loopback", http, STRICT, max_attempts=5, retry=retry)
            sh = _run(client, "a-shell", shell("echo hi"), STRICT, max_attempts=5, retry=retry)
    finally:
        hook.close()
    assert hook.hits == []  # the request was never made
    assert ex.state == common_pb2.EXECUTION_FAILED and ex.attempt == 1
    assert [a.outcome for a in ex.attempts] == [common_pb2.ATTEMPT_REFUSED]
    assert "refused by worker strict-worker" in ex.error and "127.0.0.1 is a loopback address" in ex.error
    assert sh.state == common_pb2.EXECUTION_FAILED and sh.attempt == 1
    assert "does not run shell payloads" in sh.error


def test_a_policy_file_allowlists_programs_filters_env_resolves_secrets_and_limits(cluster: Cluster) -> None:
    show_env = (
        "import json, os; print(json.dumps({k: v for k, v in os.environ.items() "
        "if k.startswith(('CRONRAFT_', 'WORKER_', 'TOKEN'))}))"
    )
    with Client(cluster.servers, timeout_s=30) as client:
        refused = _run(client, "not-allowed", command("/usr/bin/env"), CONFIGURED)
        env_run = _run(
            client,
            "env",
            command(sys.executable, "-c", show_env, env={"TOKEN": "secret:api_key"}),
            CONFIGURED,
        )
        limits = _run(client, "ulimit", command("/bin/sh", "-c", "ulimit -n"), CONFIGURED)
        missing = _run(
            client, "no-secret", command(sys.executable, "-c", "", env={"X": "secret:nope"}), CONFIGURED
        )
    assert refused.state == common_pb2.EXECUTION_FAILED
    assert refused.attempts[0].outcome == common_pb2.ATTEMPT_REFUSED
    assert "'/usr/bin/env' is not in this worker's executable allowlist" in refused.error
    assert env_run.state == common_pb2.EXECUTION_SUCCEEDED, env_run.error
    seen = json.loads(env_run.stdout_tail)
    assert seen["TOKEN"] == "k-from-the-worker"  # resolved on the worker: the log holds "secret:api_key"
    assert (
        "CRONRAFT_TOKEN" not in seen and "CRONRAFT_CLUSTER_SECRET" not in seen and "WORKER_ONLY" not in seen
    )
    assert seen["CRONRAFT_EXECUTION_ID"] == env_run.execution_id  # the attempt's own identity stays
    assert limits.state == common_pb2.EXECUTION_SUCCEEDED and limits.stdout_tail.strip() == b"77"
    assert missing.state == common_pb2.EXECUTION_FAILED and "secret 'nope' is not defined" in missing.error


def test_the_data_directory_is_private(cluster: Cluster) -> None:
    data = cluster.root / "node1"
    wait_for((data / "state" / "data.mdb").exists, 10, "the store")
    modes = {}
    for path in [data, *data.rglob("*")]:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        modes[str(path.relative_to(cluster.root))] = stat.S_IMODE(st.st_mode)
    assert modes["node1"] == 0o700
    assert modes["node1/state/data.mdb"] == 0o600 and modes["node1/state/lock.mdb"] == 0o600
    open_to_others = {p: oct(m) for p, m in modes.items() if m & 0o077}
    assert open_to_others == {}
    assert any("journal" in p for p in modes), modes
