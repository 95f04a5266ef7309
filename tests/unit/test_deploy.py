"""deploy/ (issue 18, "Deployment"): the systemd units and the multi-host example configs.

The units are checked twice: by `systemd-analyze verify` where it is installed (on a temporary copy whose
ExecStart points at this venv's entry points, since verify refuses a missing binary, and with its
warnings counted as failures: an unknown or misspelt key is only a warning to systemd), and by reading
them here: the sandbox issue 18 asks for, the two schedd units kept identical, the worker's stop timeout
longer than the grace its own flags give payloads, and every ExecStart accepted by the real parsers.
The multi-host configs load through `load_config` (their /etc/cronraft paths moved into a temporary
folder, where the cluster secret file is written 0600) and `schedctl tls init --config` makes their
certificates. docs/operations.md, "Deploy", walks through each.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from cronraft.client import cli
from cronraft.client._policy import load_policy
from cronraft.client.worker import cli as worker_cli
from cronraft.daemon import main as schedd_main
from cronraft.daemon.config import Config, is_loopback, load_config, split_host_port
from cronraft.timefmt import seconds_arg

REPO_ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = REPO_ROOT / "deploy" / "systemd"
MULTI_HOST = REPO_ROOT / "deploy" / "multi-host"
INSTALL_BIN = "/opt/cronraft/bin/"  # where the units expect the project's venv
VENV_BIN = Path(sys.executable).parent

# What issue 18 asks of every unit's sandbox, as systemd spells it.
SANDBOX = {
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "StateDirectoryMode": "0700",
    "Restart": "on-failure",
    "KillMode": "mixed",
}
# The only keys in which cronraft-schedd.service and cronraft-schedd@.service may differ.
TEMPLATE_KEYS = {"Description", "ExecStart", "StateDirectory", "WorkingDirectory"}


def unit_entries(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) of each assignment, continuation lines joined, comments dropped."""
    entries: list[tuple[str, str, str]] = []
    section, pending = "", ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith(("#", ";"))):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not an assignment: {line!r}"
        entries.append((section, key.strip(), value.strip()))
    return entries


def service(path: Path) -> dict[str, str]:
    """The [Service] section, each key's last value (as systemd reads most keys)."""
    return {k: v for s, k, v in unit_entries(path) if s == "Service"}


def exec_argv(path: Path, environ: dict[str, str]) -> list[str]:
    """ExecStart as systemd would run it: ${VAR} from `environ`, split into words."""
    text = re.sub(
        r"\$\{(\w+)\}", lambda m: shlex.quote(environ.get(m.group(1), "")), service(path)["ExecStart"]
    )
    return shlex.split(text)


UNITS = sorted(SYSTEMD.glob("*.service"))


def test_the_units_exist() -> None:
    assert [p.name for p in UNITS] == [
        "cronraft-schedd.service",
        "cronraft-schedd@.service",
        "cronraft-schedworker.service",
    ]


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_sandbox(unit: Path) -> None:
    svc = service(unit)
    for key, want in SANDBOX.items():
        assert svc.get(key) == want, f"{unit.name}: {key}={svc.get(key)!r}, want {want!r}"
    assert int(svc["LimitNOFILE"]) >= 65536
    filters = [v for s, k, v in unit_entries(unit) if k == "SystemCallFilter"]
    assert filters[0] == "@system-service", filters  # an allow list first; deny lists may follow
    assert svc["ExecStart"].startswith(INSTALL_BIN)
    assert svc["StateDirectory"].startswith("cronraft")


def test_schedd_units_differ_only_by_instance() -> None:
    plain = [e for e in unit_entries(SYSTEMD / "cronraft-schedd.service") if e[1] not in TEMPLATE_KEYS]
    template = [e for e in unit_entries(SYSTEMD / "cronraft-schedd@.service") if e[1] not in TEMPLATE_KEYS]
    assert plain == template
    assert service(SYSTEMD / "cronraft-schedd@.service")["StateDirectory"] == "cronraft/%i"


def test_schedd_unit() -> None:
    svc = service(SYSTEMD / "cronraft-schedd.service")
    argv = exec_argv(SYSTEMD / "cronraft-schedd.service", {})
    args = schedd_main._parse(argv[1:])
    assert args.config == "/etc/cronraft/node.toml"
    # schedd exits 2 on a config error (daemon/main.py): no restart loop on it.
    assert svc["RestartPreventExitStatus"] == "2"
    assert svc["ExecReload"] == "/bin/sh -c 'kill -HUP $MAINPID'"  # main.py: SIGHUP re-reads the token file
    assert svc["MemoryDenyWriteExecute"] == "yes"
    assert svc["PrivateUsers"] == "yes"


def test_worker_unit_stops_after_its_grace() -> None:
    """systemd's SIGKILL must come after the worker's own grace and kill grace, or payloads die
    without their results being handed in."""
    unit = SYSTEMD / "cronraft-schedworker.service"
    svc = service(unit)
    argv = exec_argv(unit, {"CRONRAFT_WORKER_ID": "w1"})
    args = worker_cli.build_parser().parse_args(argv[1:])
    assert args.worker_id == "w1"
    assert args.policy == Path("/etc/cronraft/worker-policy.toml")
    assert not args.allow_shell
    stop_s = seconds_arg(svc["TimeoutStopSec"])
    assert stop_s >= args.shutdown_grace + args.kill_grace + 10
    # A JIT in a payload needs writable and executable memory: the worker leaves it allowed.
    assert "MemoryDenyWriteExecute" not in svc
    # An unset CRONRAFT_WORKER_ID is an empty --id: the worker then names itself HOSTNAME-PID.
    unset = worker_cli.build_parser().parse_args(exec_argv(unit, {})[1:])
    assert unset.worker_id == ""


def test_worker_examples() -> None:
    policy = load_policy(SYSTEMD / "worker-policy.toml")
    assert "shell" not in policy.kinds
    env = dict(
        line.split("=", 1)
        for line in (SYSTEMD / "worker.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert set(env) == {"CRONRAFT_WORKER_ID", "CRONRAFT_TOKEN", "CRONRAFT_SERVER", "CRONRAFT_TLS_CA"}
    sysusers = (SYSTEMD / "cronraft.sysusers").read_text()
    for unit in UNITS:
        assert re.search(rf"^u {service(unit)['User']}\s", sysusers, re.MULTILINE), unit.name


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    verify = shutil.which("systemd-analyze")
    if verify is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    if not (VENV_BIN / "schedd").exists():
        pytest.skip(f"no schedd entry point beside {sys.executable} (install the project first)")
    names = []
    for unit in UNITS:
        # A template is verified as an instance of it.
        name = unit.name.replace("@.", "@node1.")
        text = unit.read_text(encoding="utf-8").replace(INSTALL_BIN, f"{VENV_BIN}/")
        (tmp_path / name).write_text(text, encoding="utf-8")
        names.append(str(tmp_path / name))
    done = subprocess.run([verify, "verify", *names], capture_output=True, text=True, timeout=60, check=False)
    # Unknown keys and bad values are warnings (exit 0): any output at all is a failure here.
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


# --------------------------------------------------------------------------------------- multi-host


def load_multi_host(path: Path, tmp_path: Path) -> Config:
    """`path` loaded as on its machine, its /etc/cronraft/ files in `tmp_path`."""
    etc = tmp_path / "etc"
    etc.mkdir(exist_ok=True)
    secret = etc / "cluster-secret"
    if not secret.exists():
        secret.write_text("x" * 43 + "\n")
        secret.chmod(0o600)
    copy = tmp_path / path.name
    copy.write_text(path.read_text().replace("/etc/cronraft/", f"{etc}/"))
    return load_config(copy, environ={})


MULTI_HOST_FILES = [MULTI_HOST / f"node{n}.toml" for n in (1, 2, 3)]


@pytest.mark.parametrize("path", MULTI_HOST_FILES, ids=lambda p: p.name)
def test_multi_host_config_loads(path: Path, tmp_path: Path) -> None:
    config = load_multi_host(path, tmp_path)
    assert config.node.id == path.stem
    assert config.node.data_dir == Path("/var/lib/cronraft/data")  # the unit's StateDirectory
    assert config.tls.enabled and config.auth.enabled and not config.insecure
    me = config.self_member
    for address in (me.grpc_address, me.raft_address, config.http.address):
        assert not is_loopback(split_host_port(address)[0])
    assert split_host_port(config.http.address)[0] == split_host_port(me.grpc_address)[0]
    assert config.cluster.secret_source == f"file:{tmp_path}/etc/cluster-secret"


def test_multi_host_members_agree(tmp_path: Path) -> None:
    configs = [load_multi_host(p, tmp_path) for p in MULTI_HOST_FILES]
    assert len({c.cluster.members for c in configs}) == 1
    hosts = {split_host_port(m.grpc_address)[0] for m in configs[0].cluster.members}
    assert len(hosts) == 3  # three machines


def test_multi_host_certificates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The documented `schedctl tls init DIR --config node1.toml` gives each node its address as SAN."""
    out = tmp_path / "tls"
    assert (
        cli.main(["tls", "init", str(out), "--config", str(MULTI_HOST / "node1.toml"), "--worker", "w1"]) == 0
    )
    capsys.readouterr()
    for n in (1, 2, 3):
        cert = x509.load_pem_x509_certificate((out / f"node{n}.pem").read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == [f"10.0.0.{n}"]
