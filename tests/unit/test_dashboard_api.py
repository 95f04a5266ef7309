"""The dashboard's JSON API (daemon/dashboard) against an in-memory node, through aiohttp's test client:
the calls run the real servicers behind the real interceptors, so roles, namespaces and errors are the
gRPC API's; HTTP's own edges (bodies, query values, headers, hosts, origins) are the dashboard's. Real
processes and a real browser: tests/integration/test_dashboard_browser.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from test_bulk_import import MiniNode, _Config, spec

from cronraft.daemon import dashboard
from cronraft.daemon.config import AuthConfig, Member
from cronraft.daemon.security.authn import Authenticator, TokenStore
from cronraft.daemon.security.interceptor import AuthInterceptor
from cronraft.daemon.services.audit import stamp
from cronraft.errors import NotLeader
from cronraft.proto.v1 import commands_pb2, scheduler_pb2
from cronraft.tokenfile import add_token

ROLES = {"ops": ["operator"], "rita": ["reader"], "alice": ["submitter@team-a"], "admin": ["admin"]}


@dataclass
class DashConfig(_Config):
    node: Any = field(default_factory=lambda: SimpleNamespace(id="n1"))
    cluster: Any = field(
        default_factory=lambda: SimpleNamespace(
            members=(Member("n1", "127.0.0.1:1", "127.0.0.1:2"), Member("n2", "127.0.0.1:3", "127.0.0.1:4"))
        )
    )


class DashNode(MiniNode):
    def __init__(self, authenticator: Authenticator | None) -> None:
        super().__init__()
        self.config = DashConfig()  # type: ignore[assignment]
        interceptors = [AuthInterceptor(authenticator)] if authenticator is not None else []
        self.security = SimpleNamespace(authenticator=authenticator, interceptors=interceptors)
        self.leader: str | None = None  # a follower knowing this leader, when set

    def leader_runner(self) -> Any:
        if self.leader is not None:
            raise NotLeader(self.leader)
        return super().leader_runner()

    def peer_http_address(self, node_id: str) -> str:  # learnt from the clock probes on a real node
        return {"n2": "127.0.0.1:5"}.get(node_id, "")

    async def propose(self, cmds: list[commands_pb2.Command]) -> list[commands_pb2.CommandResult]:
        stamp(cmds)  # who asked, as daemon.node.Node.propose stamps it
        return await super().propose(cmds)


class World:
    def __init__(self, tmp_path: Path, *, auth: bool) -> None:
        self.tokens: dict[str, str] = {}
        authenticator = None
        if auth:
            path = tmp_path / "tokens.toml"
            now_ms = int(time.time() * 1000)
            self.tokens = {name: add_token(path, name, roles, now_ms=now_ms) for name, roles in ROLES.items()}
            authenticator = Authenticator(AuthConfig(token_file=path), secret=None, tokens=TokenStore(path))
        self.node = DashNode(authenticator)
        self.task_ids: dict[str, str] = {}

    async def setup(self) -> None:
        self.node.replicator.start()
        self.node.committer.start()
        epoch = commands_pb2.Epoch(term=1, leader_id="n1")
        await self.node.propose([commands_pb2.Command(stamped_at_ms=0, epoch=epoch)])
        from cronraft.daemon.services import SchedulerServicer

        api = SchedulerServicer(self.node)  # type: ignore[arg-type]
        for name, ns in (("alpha", ""), ("beta", ""), ("gamma", "team-a")):
            s = spec(name, namespace=ns)
            s.tags["team"] = "data" if name != "beta" else "web"
            task = (await api._create(scheduler_pb2.CreateTaskRequest(spec=s))).task
            self.task_ids[name] = task.task_id

    def headers(self, who: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}


def run(
    tmp_path: Path, body: Callable[[World, TestClient[Any, Any]], Awaitable[None]], *, auth: bool
) -> None:
    async def main() -> None:
        world = World(tmp_path, auth=auth)
        await world.setup()
        app = web.Application()
        dashboard.mount(app, world.node)  # type: ignore[arg-type]
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        try:
            await body(world, client)
        finally:
            await client.close()
            await world.node.committer.close()

    asyncio.run(main())


# ------------------------------------------------------------------------------------ authentication off


def test_without_auth_every_caller_lists_reads_and_pauses(tmp_path: Path) -> None:
    async def body(w: World, c: TestClient[Any, Any]) -> None:
        me = await (await c.get("/api/v1/whoami")).json()
        assert me == {"node_id": "n1", "auth": False, "principal": "anonymous", "roles": {"*": ["admin"]}}
        resp = await c.get("/api/v1/tasks", params={"tag": "team=data"})
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        assert [t["spec"]["name"] for t in page["tasks"]] == ["alpha"]  # default namespace only
        everywhere = await (await c.get("/api/v1/tasks?all_namespaces=true&tag=team=data")).json()
        assert sorted(t["spec"]["name"] for t in everywhere["tasks"]) == ["alpha", "gamma"]
        prefix = await (await c.get("/api/v1/tasks?name_prefix=be")).json()
        assert [t["spec"]["name"] for t in prefix["tasks"]] == ["beta"]

        tid = w.task_ids["alpha"]
        resp = await c.post(f"/api/v1/tasks/{tid}/pause", json={"note": "maintenance"})
        assert resp.status == 200, await resp.text()
        task = await resp.json()
        assert task["state"] == "paused" and task["pause_note"] == "maintenance"
        paused = await (await c.get("/api/v1/tasks?state=paused")).json()
        assert [t["task_id"] for t in paused["tasks"]] == [tid]
        resumed = await (await c.post(f"/api/v1/tasks/{tid}/resume", json={})).json()
        assert resumed["state"] == "scheduled"
        preview = await (await c.get(f"/api/v1/tasks/{tid}/preview")).json()
        assert len(preview["fires"]) == 1  # a one-time task
        ledger = await c.get(f"/api/v1/tasks/{tid}/ledger", params={"from_ms": "0"})
        assert ledger.status == 200 and (await ledger.json())["state"] == "scheduled"
        execs = await (await c.get(f"/api/v1/tasks/{tid}/executions")).json()
        assert execs == {"executions": [], "next_page_token": ""}

    run(tmp_path, body, auth=False)


def test_errors_are_json_with_the_status_of_the_grpc_code_and_the_field(tmp_path: Path) -> None:
    async def body(w: World, c: TestClient[Any, Any]) -> None:
        async def error(resp: Any, status: int) -> dict[str, Any]:
            assert resp.status == status, await resp.text()
            assert resp.headers["Cache-Control"] == "no-store"
            return (await resp.json())["error"]  # type: ignore[no-any-return]

        e = await error(await c.get("/api/v1/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV"), 404)
        assert e["code"] == "not_found" and "not found" in e["message"]
        e = await error(await c.get("/api/v1/tasks/nope"), 400)
        assert e["field"] == "task_id"
        e = await error(await c.get("/api/v1/tasks?page_size=5000"), 400)
        assert e["field"] == "page_size" and "between 1 and 200" in e["message"]
        e = await error(await c.get("/api/v1/tasks?page_size=ten"), 400)
        assert e["field"] == "page_size" and "not an integer" in e["message"]
        e = await error(await c.get("/api/v1/tasks?state=sleeping"), 400)
        assert e["field"] == "state"
        e = await error(await c.get("/api/v1/tasks?tag=novalue"), 400)
        assert e["field"] == "tag[0]"
        e = await error(await c.get("/api/v1/tasks?namespace=Bad_NS"), 400)
        assert e["field"] == "namespace"
        tid = w.task_ids["alpha"]
        e = await error(await c.post(f"/api/v1/tasks/{tid}/pause", data=b"{not json"), 400)
        assert e["field"] == "Content-Type"
        headers = {"Content-Type": "application/json"}
        e = await error(await c.post(f"/api/v1/tasks/{tid}/pause", data=b"{not json", headers=headers), 400)
        assert e["field"] == "body" and "not JSON at line 1 column 2" in e["message"]
        e = await error(await c.post(f"/api/v1/tasks/{tid}/pause", data=b"[1]", headers=headers), 400)
        assert e["field"] == "body" and "JSON object" in e["message"]
        e = await error(await c.post(f"/api/v1/tasks/{tid}/pause", json={"note": 7}), 400)
        assert e["field"] == "note" and "string" in e["message"]
        e = await error(await c.post(f"/api/v1/tasks/{tid}/pause", json={"note": "x" * 1001}), 400)
        assert e["field"] == "note"  # the servicer's bound (cronraft.bounds.MAX_NOTE)
        big = b'{"note": "' + b"x" * 300_000 + b'"}'
        e = await error(await c.post(f"/api/v1/tasks/{tid}/pause", data=big, headers=headers), 400)
        assert e["field"] == "body" and "larger than" in e["message"]
        e = await error(await c.post("/api/v1/dead-letters/redrive", json={"execution_ids": "x"}), 400)
        assert e["field"] == "execution_ids"
        e = await error(await c.post("/api/v1/dead-letters/redrive", json={}), 400)
        assert e["field"] == "execution_ids"  # the servicer: "give execution ids or a task_id"
        await c.post(f"/api/v1/tasks/{tid}/cancel", json={})
        e = await error(await c.post(f"/api/v1/tasks/{tid}/pause", json={}), 409)
        assert e["code"] == "failed_precondition"

        w.node.leader = "127.0.0.1:3"  # a follower: writes name the leader
        e = await error(await c.post(f"/api/v1/tasks/{w.task_ids['beta']}/pause", json={}), 503)
        assert e["code"] == "unavailable"
        assert e["leader"] == {"grpc_address": "127.0.0.1:3", "node_id": "n2", "http_address": "127.0.0.1:5"}
        ok = await c.get(f"/api/v1/tasks/{w.task_ids['beta']}")  # reads are served here
        assert ok.status == 200

    run(tmp_path, body, auth=False)


def test_headers_host_and_origin_checks(tmp_path: Path) -> None:
    async def body(w: World, c: TestClient[Any, Any]) -> None:
        page = await c.get("/")
        assert page.status == 200 and page.content_type == "text/html"
        html = await page.text()
        assert "<script" in html and "<script>" not in html  # no inline script
        csp = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
        assert page.headers["X-Frame-Options"] == "DENY"
        js = await c.get("/static/app.js")
        assert js.status == 200 and js.content_type == "text/javascript"
        again = await c.get("/static/app.js", headers={"If-None-Match": js.headers["ETag"]})
        assert again.status == 304
        assert (await c.get("/static/nope.js")).status == 404
        api = await c.get("/api/v1/tasks")
        assert api.headers["X-Content-Type-Options"] == "nosniff"

        # DNS rebinding: with authentication off, a name other than localhost is refused.
        rebound = await c.get("/api/v1/tasks", headers={"Host": "evil.example:8080"})
        assert rebound.status == 403 and "DNS rebinding" in (await rebound.json())["error"]["message"]
        assert (await c.get("/api/v1/tasks", headers={"Host": "localhost:1"})).status == 200
        assert (await c.get("/api/v1/tasks", headers={"Host": "[::1]:1"})).status == 200
        # A write from another site's page is refused; from the dashboard's own origin it goes through.
        tid = w.task_ids["alpha"]
        cross = await c.post(f"/api/v1/tasks/{tid}/pause", json={}, headers={"Origin": "http://evil.example"})
        assert cross.status == 403
        same = await c.post(
            f"/api/v1/tasks/{tid}/pause", json={}, headers={"Origin": f"http://{c.host}:{c.port}"}
        )
        assert same.status == 200, await same.text()

    run(tmp_path, body, auth=False)


# ------------------------------------------------------------------------------------- authentication on


def test_with_auth_tokens_roles_and_namespaces_are_the_grpc_apis(tmp_path: Path) -> None:
    async def body(w: World, c: TestClient[Any, Any]) -> None:
        tid = w.task_ids["alpha"]
        resp = await c.get("/api/v1/tasks")
        assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert "ListTasks needs role reader" in (await resp.json())["error"]["message"]
        resp = await c.get("/api/v1/whoami")
        assert resp.status == 401
        bad = await c.get("/api/v1/tasks", headers={"Authorization": "Bearer crt1_nope"})
        assert bad.status == 401 and "not known" in (await bad.json())["error"]["message"]
        me = await (await c.get("/api/v1/whoami", headers=w.headers("rita"))).json()
        assert me["principal"] == "rita" and me["roles"] == {"*": ["reader"]} and me["auth"] is True

        listed = await c.get("/api/v1/tasks", headers=w.headers("rita"))
        assert listed.status == 200 and len((await listed.json())["tasks"]) == 2
        denied = await c.post(f"/api/v1/tasks/{tid}/pause", json={}, headers=w.headers("rita"))
        assert denied.status == 403
        err = (await denied.json())["error"]
        assert err["code"] == "permission_denied" and "PauseTask needs role submitter" in err["message"]
        # alice holds submitter in team-a only: default's task does not exist for her (as on gRPC).
        hidden = await c.get(f"/api/v1/tasks/{tid}", headers=w.headers("alice"))
        assert hidden.status == 404 and (await hidden.json())["error"]["message"] == f"task {tid} not found"
        own = await c.post(f"/api/v1/tasks/{w.task_ids['gamma']}/pause", json={}, headers=w.headers("alice"))
        assert own.status == 200 and (await own.json())["state"] == "paused"
        audit = await c.get("/api/v1/audit", headers=w.headers("ops"))
        assert audit.status == 403 and "needs role admin" in (await audit.json())["error"]["message"]
        audit = await c.get("/api/v1/audit", headers=w.headers("admin"))
        assert audit.status == 200

        ok = await c.post(f"/api/v1/tasks/{tid}/pause", json={"request_id": "r1"}, headers=w.headers("ops"))
        assert ok.status == 200
        # The audit stamp: who asked, through which method, from where (the dashboard's peer).
        with w.node.kv.read() as txn:
            from cronraft.raft import audit_trail

            records, _ = audit_trail.list_records(txn, method="PauseTask", page_size=10)
        last = records[-1]
        assert (last.principal, last.method, last.request_id) == ("ops", "PauseTask", "r1")
        assert last.peer.startswith("dashboard:ipv4:127.0.0.1:")
        # With authentication on, any Host goes: the bearer token is what protects.
        named = await c.get("/api/v1/tasks", headers={**w.headers("rita"), "Host": "cronraft.example"})
        assert named.status == 200

    run(tmp_path, body, auth=True)


@pytest.mark.parametrize(
    ("cert", "expected"),
    [
        (None, {}),
        (
            {"subject": ((("commonName", "ci"),),), "subjectAltName": (("DNS", "ci.example"),)},
            {"x509_subject_alternative_name": [b"ci.example"], "x509_common_name": [b"ci"]},
        ),
    ],
)
def test_client_certificates_read_like_grpcs_auth_context(cert: Any, expected: dict[str, Any]) -> None:
    from cronraft.daemon.dashboard.calls import auth_context

    assert auth_context(cert) == expected


def test_calls_past_the_in_flight_bound_are_refused_429() -> None:
    from cronraft.daemon.dashboard.calls import CallFailed, InProcessCalls, PeerInfo

    async def behaviour(request: Any, context: Any) -> str:
        return "served"

    async def main() -> None:
        calls = InProcessCalls([], max_in_flight=1)
        peer = PeerInfo("ipv4:127.0.0.1:1")
        assert (
            await calls.call("/cronraft.v1.Scheduler/GetTask", behaviour, None, peer=peer, authorization=None)
            == "served"
        )  # type: ignore[arg-type]
        calls.in_flight = 1  # one call already being served
        with pytest.raises(CallFailed) as refused:
            await calls.call("/cronraft.v1.Scheduler/GetTask", behaviour, None, peer=peer, authorization=None)  # type: ignore[arg-type]
        assert refused.value.status == 429 and "at most 1 calls at once" in refused.value.message

    asyncio.run(main())


def test_search_statistics_and_results_endpoints(tmp_path: Path) -> None:
    async def body(w: World, c: TestClient[Any, Any]) -> None:
        async def get(path: str, who: str | None = "rita", **params: Any) -> tuple[int, Any]:
            resp = await c.get(path, params=params, headers=w.headers(who))
            return resp.status, await resp.json()

        tid = w.task_ids["alpha"]
        status, page = await get("/api/v1/tasks", kind="at", last_outcome="failed")
        assert status == 200 and page["tasks"] == []  # nothing ran yet
        status, page = await get("/api/v1/tasks", kind="at", next_after_ms="1")
        assert status == 200 and {t["spec"]["name"] for t in page["tasks"]} == {"alpha", "beta"}
        status, err = await get("/api/v1/tasks", last_outcome="running")
        assert status == 400 and err["error"]["field"] == "last_outcomes[0]"
        status, page = await get("/api/v1/executions", state="failed", since_ms="1", tag="team=data")
        assert status == 200 and page == {"executions": [], "next_page_token": ""}
        status, err = await get("/api/v1/executions", state="bogus")
        assert status == 400 and err["error"]["field"] == "state"
        status, stats = await get(f"/api/v1/tasks/{tid}/stats", hours="48")
        assert status == 200 and stats["task_id"] == tid and stats["window"]["runs"] == 0
        status, stats = await get("/api/v1/stats")
        assert status == 200 and stats["window"]["runs"] == 0 and stats["top_failing"] == []
        status, err = await get("/api/v1/stats", who="alice")  # reader in one namespace only
        assert status == 403 and "GetClusterStats" in err["error"]["message"]
        status, err = await get("/api/v1/executions/01ARZ3NDEKTSV4RRFFQ69G5FAV/result")
        assert status == 404

    run(tmp_path, body, auth=True)
