"""The dashboard's API over HTTPS with client certificates (issue 15), against a real node with [tls]
(require_client_cert) and [auth] (cert_roles and a token file): a client certificate authenticates a
call as the gRPC API does (its identity mapped by cert_roles to roles), a token without a certificate
works too, a call with neither is refused 401, and roles hold (a reader's pause 403, an operator's 200)."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from cronraft.client import Client, command, cron
from cronraft.client._pki import Leaf, init_pki
from cronraft.client._transport import Transport
from cronraft.tokenfile import add_token
from tests.support.ports import free_port

from .harness import Cluster, wait_for
from .test_security_transport import SecureCluster

pytestmark = pytest.mark.integration


def call(
    url: str, pki: Path, *, cert: str | None = None, token: str | None = None, body: Any = None
) -> tuple[int, Any]:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert is not None:
        ctx.load_cert_chain(pki / f"{cert}.pem", pki / f"{cert}-key.pem")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10, context=ctx) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_client_certificates_and_tokens_over_https(tmp_path: Path, clusters: list[Cluster]) -> None:
    pki = tmp_path / "pki"
    init_pki(pki, [Leaf("node1", ("127.0.0.1",), server=True), Leaf("ops"), Leaf("viewer"), Leaf("nobody")])
    tokens_file = tmp_path / "tokens.toml"
    rita = add_token(tokens_file, "rita", ["reader"], now_ms=int(time.time() * 1000))
    port = free_port()
    toml = (
        f'[http]\naddress = "127.0.0.1:{port}"\n\n'
        f'[tls]\ncert = "{pki / "node1.pem"}"\nkey = "{pki / "node1-key.pem"}"\n'
        f'client_ca = "{pki / "ca.pem"}"\nrequire_client_cert = true\n\n'
        f'[auth]\ntoken_file = "{tokens_file}"\n'
        'cert_roles = { "ops" = ["admin"], "viewer" = ["reader"] }\n'
    )
    c = SecureCluster(tmp_path, n=1, extra_toml=toml)
    ca, ops_cert, ops_key = (
        (pki / "ca.pem").read_bytes(),
        (pki / "ops.pem").read_bytes(),
        (pki / "ops-key.pem"),
    )
    c.admin = Transport(ca=ca, cert=ops_cert, key=ops_key.read_bytes())
    clusters.append(c)
    c.start()
    task = Client(c.servers, timeout_s=10, transport=c.admin).create_task(
        "tls-task", cron("0 5 * * *"), command("true")
    )
    url = f"https://127.0.0.1:{port}/api/v1"
    wait_for(lambda: call(f"{url}/whoami", pki, cert="ops")[0] == 200, 20, "the HTTPS listener")

    status, me = call(f"{url}/whoami", pki, cert="ops")
    assert (me["principal"], me["source"]) == ("ops", "cert")
    status, page = call(f"{url}/tasks", pki, cert="viewer")
    assert status == 200 and [t["task_id"] for t in page["tasks"]] == [task.task_id]
    status, err = call(f"{url}/tasks/{task.task_id}/pause", pki, cert="viewer", body={})
    assert status == 403 and "PauseTask needs role submitter" in err["error"]["message"]
    status, err = call(f"{url}/tasks", pki, cert="nobody")  # verified, but not in cert_roles
    assert status == 401 and "not in auth.cert_roles" in err["error"]["message"]
    status, err = call(f"{url}/tasks", pki)  # no certificate, no token
    assert status == 401
    status, page = call(f"{url}/tasks", pki, token=rita)  # a token without a certificate
    assert status == 200
    status, paused = call(f"{url}/tasks/{task.task_id}/pause", pki, cert="ops", body={})
    assert status == 200 and paused["state"] == "paused"
