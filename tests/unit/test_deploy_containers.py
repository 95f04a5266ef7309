"""deploy/docker and deploy/kubernetes (issue 18, "Deployment"), read without a container engine.

Every node config loads through `load_config`; the compose file and every Kubernetes manifest parse, and
what they say agrees with the node configs: the probes and the HEALTHCHECK reach the `[http]` address's
port on the paths the node serves (`/healthz` for liveness, `/readyz` for readiness), over HTTPS since
the configs have `[tls]`; volumes are mounted where the configs put the data directory, certificates
and tokens; the member list names the StatefulSet's pods under its headless Service; workers connect
under the id their token names. docs/operations.md, "Deploy", says what was run for real and how.
"""

from __future__ import annotations

import http.server
import importlib.util
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import pytest
import yaml

from cronraft.client.worker import cli as worker_cli
from cronraft.daemon.config import Config, config_from_dict, split_host_port
from cronraft.daemon.security.authz import Principal
from cronraft.daemon.wire import worker_identity_problem
from cronraft.proto.v1 import worker_pb2

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER = REPO_ROOT / "deploy" / "docker"
KUBE = REPO_ROOT / "deploy" / "kubernetes"
SECRET_ENV = {"CRONRAFT_CLUSTER_SECRET": "k" * 43}


def load_node(text: str, source: str, tmp_path: Path) -> Config:
    """A container's node config, loaded as its node would: a `secret_file` is given a private file in
    `tmp_path` (the container's own is made by the compose file's init service)."""
    data = tomllib.loads(text)
    if "secret_file" in data["cluster"]:
        secret = tmp_path / "cluster-secret"
        secret.write_text("s" * 43)
        secret.chmod(0o600)
        data["cluster"]["secret_file"] = str(secret)
    return config_from_dict(data, source, environ=SECRET_ENV)


def healthcheck_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cronraft_healthcheck", DOCKER / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------- docker

COMPOSE_NODES = ("node1", "node2", "node3")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return doc


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> source (a volume name or a path relative to the compose file)."""
    out = {}
    for item in service.get("volumes", []):
        source, target, *_ = item.split(":")
        out[target] = source
    return out


def test_compose_has_three_nodes_two_workers_and_init(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"init", *COMPOSE_NODES, "worker1", "worker2"}
    for name, service in compose["services"].items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        if name != "init":
            assert service["depends_on"]["init"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("name", COMPOSE_NODES)
def test_compose_node_config(name: str, compose: dict[str, Any], tmp_path: Path) -> None:
    service = compose["services"][name]
    volumes = mounts(service)
    source = DOCKER / volumes["/etc/cronraft/node.toml"]
    config = load_node(source.read_text(), str(source), tmp_path)
    assert config.node.id == name == service["hostname"]
    assert config.tls.enabled and config.auth.enabled and not config.insecure
    # The data directory is a folder inside the node's own volume; its secrets come from node-secrets.
    assert config.node.data_dir.parent == Path("/var/lib/cronraft")
    assert volumes["/var/lib/cronraft"] == f"{name}-data"
    assert volumes["/etc/cronraft/secrets"] == "node-secrets"
    for path in (config.tls.cert, config.tls.key, config.tls.ca, config.auth.token_file):
        assert path is not None and path.is_relative_to("/etc/cronraft/secrets")
    # Members dial each other by service name; the HTTP listener is published on the host's loopback.
    assert config.self_member.grpc_address == f"{name}:50051"
    host, port = split_host_port(config.http.address)
    assert host == name
    assert any(p.startswith("127.0.0.1:") and p.endswith(f":{port}") for p in service["ports"])
    # The image's HEALTHCHECK reads this config: GET /healthz over HTTPS on that address.
    url = healthcheck_module().node_url(tomllib.loads(source.read_text()))
    assert url == f"https://{name}:{port}/healthz"


def test_compose_members_agree(compose: dict[str, Any], tmp_path: Path) -> None:
    configs = [load_node((DOCKER / "nodes" / f"{n}.toml").read_text(), n, tmp_path) for n in COMPOSE_NODES]
    assert len({c.cluster.members for c in configs}) == 1
    assert [m.id for m in configs[0].cluster.members] == list(COMPOSE_NODES)


@pytest.mark.parametrize("name", ["worker1", "worker2"])
def test_compose_worker(name: str, compose: dict[str, Any], tmp_path: Path) -> None:
    service = compose["services"][name]
    # The token is read from the worker's own secrets volume ($CRONRAFT_TOKEN_FILE), never in argv.
    worker_id = f"w{name[-1]}"
    assert service["environment"] == {"CRONRAFT_TOKEN_FILE": f"/etc/cronraft/secrets/{worker_id}.token"}
    argv = service["command"].split()
    assert argv[0] == "schedworker"
    args = worker_cli.build_parser().parse_args(argv[1:])
    assert args.worker_id == worker_id
    assert args.tls_ca == "/etc/cronraft/secrets/ca.pem" and args.token is None
    assert mounts(service)["/etc/cronraft/secrets"] == "worker-secrets"  # never node-secrets
    assert [s for item in args.server for s in item.split(",")] == [f"{n}:50051" for n in COMPOSE_NODES]
    # Stopped after its grace (60 s) and kill grace: compose's stop_grace_period comes later.
    assert int(service["stop_grace_period"].rstrip("s")) >= args.shutdown_grace + args.kill_grace + 10
    assert service["healthcheck"]["test"][-1] == f"http://{args.metrics_address}/metrics"


def test_init_script_makes_what_the_configs_read(compose: dict[str, Any]) -> None:
    script = (DOCKER / "init-secrets.sh").read_text()
    init = mounts(compose["services"]["init"])
    assert init["/etc/cronraft/secrets"] == "node-secrets"
    assert init["/etc/cronraft/worker-secrets"] == "worker-secrets"
    for made in (
        "tls init",
        "cluster-secret",
        "tokens.toml",
        "admin.token",
        "for worker in w1 w2",
        '"$WORKERS/$worker.token"',
        "ca.pem",
    ):
        assert made in script


def test_dockerfile() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert "USER 10001:10001" in text
    assert (
        'HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["cronraft-healthcheck"]'
        in text
    )
    assert "-c constraints.txt" in text and "--no-index" in text
    assert 'CMD ["schedd", "--config", "/etc/cronraft/node.toml", "--log-format", "json"]' in text
    ignored = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*") + 1 :][:3] == ["!pyproject.toml", "!setup.cfg", "!constraints.txt"]


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[int]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


def test_healthcheck_script(health_server: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hc = healthcheck_module()
    config = tmp_path / "node.toml"
    config.write_text(f'[http]\naddress = "0.0.0.0:{health_server}"\n')
    monkeypatch.setenv("CRONRAFT_CONFIG", str(config))
    assert hc.main([]) == 0  # a wildcard host is dialled on loopback, plain HTTP without [tls]
    assert hc.main([f"http://127.0.0.1:{health_server}/readyz"]) == 1
    assert (
        hc.node_url({"http": {"address": "[::]:50071"}, "tls": {"cert": "x"}})
        == "https://127.0.0.1:50071/healthz"
    )
    with pytest.raises(SystemExit):
        hc.node_url({})


# --------------------------------------------------------------------------------------- kubernetes


@pytest.fixture(scope="module")
def kube() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> manifest, of every file kustomization.yaml lists."""
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    files = sorted(p.name for p in KUBE.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == files
    out = {}
    for name in files:
        for doc in yaml.safe_load_all((KUBE / name).read_text()):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in out, key
            out[key] = doc
    return out


def test_kube_objects(kube: dict[tuple[str, str], dict[str, Any]]) -> None:
    assert set(kube) == {
        ("Service", "cronraft-peers"),
        ("Service", "cronraft"),
        ("ConfigMap", "cronraft-nodes"),
        ("StatefulSet", "cronraft"),
        ("PodDisruptionBudget", "cronraft"),
        ("Deployment", "cronraft-worker-w1"),
    }


def statefulset(kube: dict[tuple[str, str], dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    sts = kube["StatefulSet", "cronraft"]
    return sts, sts["spec"]["template"]["spec"]["containers"][0]


def node_configs(kube: dict[tuple[str, str], dict[str, Any]], tmp_path: Path) -> dict[str, Config]:
    data = kube["ConfigMap", "cronraft-nodes"]["data"]
    return {name: load_node(text, f"configmap:{name}", tmp_path) for name, text in data.items()}


def test_kube_configs_name_the_pods(kube: dict[tuple[str, str], dict[str, Any]], tmp_path: Path) -> None:
    sts, container = statefulset(kube)
    pods = [f"cronraft-{i}" for i in range(sts["spec"]["replicas"])]
    configs = node_configs(kube, tmp_path)
    assert sorted(configs) == [f"{pod}.toml" for pod in pods]
    # schedd reads the file of its own pod: $(POD_NAME) is the pod's name.
    assert container["args"][:3] == ["schedd", "--config", "/etc/cronraft/config/$(POD_NAME).toml"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]
    service = sts["spec"]["serviceName"]
    for pod in pods:
        config = configs[f"{pod}.toml"]
        assert config.node.id == pod
        assert config.tls.enabled and config.auth.enabled and not config.insecure
        assert [m.grpc_address for m in config.cluster.members] == [f"{p}.{service}:50051" for p in pods]
        assert split_host_port(config.http.address)[0] == f"{pod}.{service}"
        assert config.cluster.secret_source == "env:CRONRAFT_CLUSTER_SECRET"
    assert len({c.cluster.members for c in configs.values()}) == 1


def test_kube_statefulset(kube: dict[tuple[str, str], dict[str, Any]], tmp_path: Path) -> None:
    sts, container = statefulset(kube)
    spec = sts["spec"]
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "Parallel"  # a node is ready only once a quorum is up
    peers = kube["Service", spec["serviceName"]]["spec"]
    assert peers["clusterIP"] == "None" and peers["publishNotReadyAddresses"] is True
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"] == labels == peers["selector"]
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user
    for c in (container, *pod["initContainers"]):
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
    # The secret reaches the node through its environment, from a Secret.
    secret = next(e for e in container["env"] if e["name"] == "CRONRAFT_CLUSTER_SECRET")
    assert secret["valueFrom"]["secretKeyRef"] == {"name": "cronraft-raft", "key": "secret"}


def test_kube_probes_reach_the_http_listener(
    kube: dict[tuple[str, str], dict[str, Any]], tmp_path: Path
) -> None:
    _, container = statefulset(kube)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for config in node_configs(kube, tmp_path).values():
        me = config.self_member
        assert ports["http"] == split_host_port(config.http.address)[1]
        assert ports["grpc"] == split_host_port(me.grpc_address)[1]
        assert ports["raft"] == split_host_port(me.raft_address)[1]
    scheme = "HTTPS"  # every config has [tls]: the listener serves HTTPS
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        assert container[probe]["httpGet"] == {"path": path, "port": "http", "scheme": scheme}, probe


def test_kube_volumes_hold_what_the_configs_read(
    kube: dict[tuple[str, str], dict[str, Any]], tmp_path: Path
) -> None:
    sts, container = statefulset(kube)
    mounts_ = {m["name"]: PurePosixPath(m["mountPath"]) for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    claims = {c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]}
    assert "data" in claims and "data" not in volumes
    assert volumes["config"]["configMap"]["name"] == "cronraft-nodes"
    assert volumes["tls"]["secret"]["secretName"] == "cronraft-tls"
    assert volumes["tokens"]["secret"]["secretName"] == "cronraft-tokens"
    for name, config in node_configs(kube, tmp_path).items():
        # The data directory is a folder of the volume, never its root (lost+found).
        assert PurePosixPath(config.node.data_dir).parent == mounts_["data"]
        for path in (config.tls.cert, config.tls.key, config.tls.ca):
            assert path is not None and PurePosixPath(path).parent == mounts_["tls"], name
        assert config.auth.token_file is not None
        assert PurePosixPath(config.auth.token_file).parent == mounts_["tokens"]
        assert mounts_["config"] / name == PurePosixPath(f"/etc/cronraft/config/{name}")


def test_kube_pdb_and_client_service(kube: dict[tuple[str, str], dict[str, Any]]) -> None:
    sts, _ = statefulset(kube)
    labels = sts["spec"]["template"]["metadata"]["labels"]
    pdb = kube["PodDisruptionBudget", "cronraft"]["spec"]
    assert pdb["maxUnavailable"] == 1 and pdb["selector"]["matchLabels"] == labels
    client = kube["Service", "cronraft"]["spec"]
    assert client["selector"] == labels and "clusterIP" not in client
    assert {p["name"]: p["targetPort"] for p in client["ports"]} == {"grpc": "grpc", "http": "http"}


def test_kube_worker(kube: dict[tuple[str, str], dict[str, Any]], tmp_path: Path) -> None:
    deployment = kube["Deployment", "cronraft-worker-w1"]
    spec = deployment["spec"]
    # Several pods share the credential w1, each its own worker: w1#<pod name> (daemon.wire).
    assert spec["replicas"] >= 2
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    args = worker_cli.build_parser().parse_args(container["args"][1:])
    principal, _, instance = args.worker_id.partition("#")
    assert instance == "$(POD_NAME)"
    pod_name = next(e for e in container["env"] if e["name"] == "POD_NAME")
    assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert [e["name"] for e in container["env"]].index("POD_NAME") == 0  # defined before it is used
    hello = worker_pb2.Hello(worker_id=f"{principal}#cronraft-worker-w1-5d8f-x2x9q")
    assert worker_identity_problem(hello, Principal(principal, {"*": frozenset({"worker"})}, "token")) == ""
    # Its own token, from a mounted file ($CRONRAFT_TOKEN_FILE), readable through the pod's group.
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "CRONRAFT_TOKEN" not in env
    mount = next(m for m in container["volumeMounts"] if m["name"] == "token")
    assert env["CRONRAFT_TOKEN_FILE"] == f"{mount['mountPath']}/token"
    token = next(v for v in pod["volumes"] if v["name"] == "token")["secret"]
    assert token["secretName"] == "cronraft-worker-tokens"
    assert token["items"] == [{"key": principal, "path": "token"}]
    assert token["defaultMode"] == 0o440 and pod["securityContext"]["fsGroup"] == 10001
    members = next(iter(node_configs(kube, tmp_path).values())).cluster.members
    assert args.server == [",".join(m.grpc_address for m in members)]
    assert not args.allow_shell
    assert pod["terminationGracePeriodSeconds"] >= args.shutdown_grace + args.kill_grace + 10
    assert pod["automountServiceAccountToken"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # The worker mounts the CA only, never a node's key.
    ca = next(v for v in pod["volumes"] if v["name"] == "ca")["secret"]
    assert ca["items"] == [{"key": "ca.pem", "path": "ca.pem"}]
    assert container["livenessProbe"]["exec"]["command"][-1] == f"http://{args.metrics_address}/metrics"


def test_kube_schemas(kube: dict[tuple[str, str], dict[str, Any]]) -> None:
    """Against Kubernetes' own schemas, unknown fields refused (kubernetes-validate bundles them; it is
    not a dependency: `pip install kubernetes-validate` to run this)."""
    validator = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    for doc in kube.values():
        for version in ("1.28.0", validator.latest_version()):
            validator.validate(doc, version, strict=True)
