"""The dashboard's JSON API, `/api/v1/...`: each endpoint is one RPC of the gRPC API run in process
(daemon.dashboard.calls), its answer rendered as the JSON of docs/cli.md (`schedctl -o json`,
cronraft.client._render). docs/dashboard.md lists the endpoints.

Writes go to the leader, as with gRPC: on a follower they are answered 503 with the leader's addresses
(`error.leader`), so that the page says where to go; they are not forwarded (a forwarded call would
carry a bearer token to another node, and could not carry a client certificate at all).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from aiohttp import web
from google.protobuf.message import Message

from cronraft import bounds, errors
from cronraft.client import _render as render
from cronraft.client._audit import record_to_json
from cronraft.daemon.dashboard.calls import CallFailed, InProcessCalls, auth_context
from cronraft.daemon.dashboard.params import MAX_PAGE_SIZE, Query, read_body
from cronraft.daemon.dashboard.responses import (
    error_response,
    execution_row,
    execution_state,
    json_response,
    peer_of,
    task_state,
)
from cronraft.daemon.services import ClusterServicer, SchedulerServicer
from cronraft.daemon.services.audit import AuditServicer
from cronraft.proto.v1 import audit_pb2, cluster_pb2, scheduler_pb2

if TYPE_CHECKING:
    from cronraft.daemon.node import Node

__all__ = ["API_PREFIX", "Api"]

API_PREFIX = "/api/v1"
S = scheduler_pb2
LOG_MAX_BYTES = 256 * 1024  # per stream and poll (a stream stores at most 1 MiB: four polls catch up)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Api:
    """The endpoints, over the node's servicers (the same classes the gRPC server registers)."""

    def __init__(self, node: Node, calls: InProcessCalls) -> None:
        self.node = node
        self.calls = calls
        self.services: dict[str, Any] = {
            "Scheduler": SchedulerServicer(node),
            "Cluster": ClusterServicer(node),
            "Audit": AuditServicer(node),
        }

    # ------------------------------------------------------------------------------------ plumbing

    async def rpc(self, request: web.Request, method: str, message: Message) -> Any:
        """RPC `method` ("Scheduler/PauseTask") with `message`, as the HTTP caller."""
        service, name = method.split("/")
        behaviour = getattr(self.services[service], name, None)
        if behaviour is None:  # an RPC of a newer proto than this servicer (stats, search, results)
            raise CallFailed(grpc.StatusCode.UNIMPLEMENTED, f"{name}: not served by this node's version")
        return await self.calls.call(
            f"/cronraft.v1.{method}",
            behaviour,
            message,
            peer=peer_of(request),
            authorization=request.headers.get("Authorization"),
        )

    def leader_of(self, failure: CallFailed) -> dict[str, str] | None:
        """A follower's answer to a write: the leader's node id, gRPC address and HTTP address (learnt
        from its answers to the clock probes; "" until one came), for the page's "go to the leader"."""
        if failure.code != grpc.StatusCode.UNAVAILABLE or failure.leader is None:
            return None
        out = {"grpc_address": failure.leader, "node_id": "", "http_address": ""}
        for m in self.node.config.cluster.members:
            if m.grpc_address == failure.leader:
                out["node_id"] = m.id
                out["http_address"] = self.node.peer_http_address(m.id)
        return out

    def wrap(self, handler: Handler) -> Handler:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except CallFailed as e:
                return error_response(e, self.leader_of(e))
            except errors.CronraftError as e:
                return error_response(CallFailed.of(e))

        return run

    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) of every endpoint, errors answered as JSON."""
        p = API_PREFIX
        table: list[tuple[str, str, Handler]] = [
            ("GET", "/whoami", self.whoami),
            ("GET", "/cluster", self.cluster),
            ("GET", "/stats", self.cluster_stats),
            ("GET", "/tasks", self.list_tasks),
            ("GET", "/tasks/{task_id}", self.get_task),
            ("GET", "/tasks/{task_id}/preview", self.preview),
            ("GET", "/tasks/{task_id}/ledger", self.ledger),
            ("GET", "/tasks/{task_id}/executions", self.list_executions),
            ("GET", "/tasks/{task_id}/stats", self.task_stats),
            ("POST", "/tasks/{task_id}/pause", self.pause),
            ("POST", "/tasks/{task_id}/resume", self.resume),
            ("POST", "/tasks/{task_id}/trigger", self.trigger),
            ("POST", "/tasks/{task_id}/cancel", self.cancel_task),
            ("GET", "/executions", self.search_executions),
            ("GET", "/executions/{execution_id}", self.get_execution),
            ("GET", "/executions/{execution_id}/logs", self.logs),
            ("GET", "/executions/{execution_id}/result", self.result),
            ("POST", "/executions/{execution_id}/cancel", self.cancel_execution),
            ("GET", "/dead-letters", self.dead_letters),
            ("POST", "/dead-letters/redrive", self.redrive),
            ("POST", "/dead-letters/purge", self.purge),
            ("GET", "/audit", self.audit),
        ]
        return [(method, p + path, self.wrap(h)) for method, path, h in table]

    # ------------------------------------------------------------------------------------- cluster

    async def whoami(self, request: web.Request) -> web.StreamResponse:
        """Who the credentials are (the login page checks a token with it); no role needed."""
        authn = self.node.security.authenticator
        node = {"node_id": self.node.config.node.id, "auth": authn is not None}
        if authn is None:
            return json_response({**node, "principal": "anonymous", "roles": {"*": ["admin"]}})
        authorization = request.headers.get("Authorization")
        metadata = (("authorization", authorization),) if authorization is not None else ()
        principal = authn.authenticate(metadata, auth_context(peer_of(request).cert))
        roles = {ns: sorted(r) for ns, r in sorted(principal.roles.items())}
        return json_response(
            {**node, "principal": principal.name, "roles": roles, "source": principal.source}
        )

    async def cluster(self, request: web.Request) -> web.StreamResponse:
        """Cluster.Status (admin), and the workers connected to this node when it leads."""
        status: cluster_pb2.StatusResponse = await self.rpc(
            request, "Cluster/Status", cluster_pb2.StatusRequest()
        )
        body = render.status_to_json(status)
        runner = self.node.runner if status.is_leader else None
        workers = None
        if runner is not None:
            workers = [
                {
                    "worker_id": w.worker_id,
                    "capacity": w.capacity,
                    "running": len(w.inflight),
                    "free": w.free(),
                    "queues": sorted(w.queues),
                    "labels": dict(sorted(w.labels.items())),
                    "silent": w.silent,
                    "draining": w.draining,
                    "connected": w.connected,
                }
                for w in sorted(runner.core.workers.values(), key=lambda w: w.worker_id)
            ]
        body["workers"] = workers  # None: not the leader (workers connect to the leader)
        body["commit_lag"] = max(0, status.commit_index - status.applied_index)
        return json_response(body)

    # --------------------------------------------------------------------------------------- tasks

    async def list_tasks(self, request: web.Request) -> web.StreamResponse:
        q = Query.of(request)
        message = S.ListTasksRequest(
            state=task_state(q.text("state")),
            tags=q.pairs("tag"),
            name_prefix=q.text("name_prefix"),
            page_size=q.page_size(),
            page_token=q.text("page_token"),
            namespace=q.text("namespace"),
            all_namespaces=q.flag("all_namespaces"),
            kind=q.text("kind"),
            next_after_ms=q.integer("next_after_ms", 0, low=0),
            next_before_ms=q.integer("next_before_ms", 0, low=0),
            last_outcomes=[execution_state(v) for v in q.all("last_outcome")],
        )
        resp = await self.rpc(request, "Scheduler/ListTasks", message)
        return json_response(
            {"tasks": [render.task_to_json(t) for t in resp.tasks], "next_page_token": resp.next_page_token}
        )

    async def get_task(self, request: web.Request) -> web.StreamResponse:
        task = await self.rpc(
            request, "Scheduler/GetTask", S.GetTaskRequest(task_id=request.match_info["task_id"])
        )
        return json_response(render.task_to_json(task))

    async def preview(self, request: web.Request) -> web.StreamResponse:
        q = Query.of(request)
        message = S.PreviewTaskRequest(
            task_id=request.match_info["task_id"],
            count=q.integer("count", 10, low=1, high=100),
            from_ms=q.integer("from_ms", 0, low=0),
        )
        resp = await self.rpc(request, "Scheduler/PreviewTask", message)
        return json_response({"fires": [render.preview_fire_to_json(f) for f in resp.fires]})

    async def ledger(self, request: web.Request) -> web.StreamResponse:
        """The fire ledger from `from_ms` (default: the last hour), oldest first."""
        q = Query.of(request)
        now_ms = int(time.time() * 1000)
        message = S.ExplainTaskRequest(
            task_id=request.match_info["task_id"],
            from_ms=q.integer("from_ms", max(0, now_ms - 3_600_000), low=0),
            to_ms=q.integer("to_ms", 0, low=0),
            limit=q.integer("limit", 100, low=1, high=MAX_PAGE_SIZE),
        )
        resp = await self.rpc(request, "Scheduler/ExplainTask", message)
        return json_response(render.explain_to_json(resp))

    async def list_executions(self, request: web.Request) -> web.StreamResponse:
        q = Query.of(request)
        message = S.ListExecutionsRequest(
            task_id=request.match_info["task_id"],
            state=execution_state(q.text("state")),
            page_size=q.page_size(),
            page_token=q.text("page_token"),
        )
        resp = await self.rpc(request, "Scheduler/ListExecutions", message)
        return json_response(
            {
                "executions": [execution_row(e) for e in resp.executions],
                "next_page_token": resp.next_page_token,
            }
        )

    async def task_stats(self, request: web.Request) -> web.StreamResponse:
        """The statistics the cluster keeps for the task, over the last `hours` (default 24, at most a
        week): `schedctl task stats -o json`."""
        q = Query.of(request)
        hours = q.integer("hours", 24, low=1, high=24 * 7)
        message = S.GetTaskStatsRequest(
            task_id=request.match_info["task_id"],
            since_ms=max(0, int(time.time() * 1000) - hours * 3_600_000),
        )
        resp = await self.rpc(request, "Scheduler/GetTaskStats", message)
        return json_response(render.task_stats_to_json(resp.stats))

    async def cluster_stats(self, request: web.Request) -> web.StreamResponse:
        """The cluster's statistics (reader in every namespace): `schedctl stats -o json`."""
        q = Query.of(request)
        hours = q.integer("hours", 24, low=1, high=24 * 7)
        message = S.GetClusterStatsRequest(
            since_ms=max(0, int(time.time() * 1000) - hours * 3_600_000),
            limit=q.integer("limit", 10, low=1, high=20),
        )
        resp = await self.rpc(request, "Scheduler/GetClusterStats", message)
        return json_response(render.cluster_stats_to_json(resp.stats))

    async def pause(self, request: web.Request) -> web.StreamResponse:
        body = await read_body(request)
        message = S.PauseTaskRequest(
            task_id=request.match_info["task_id"], note=body.text("note"), request_id=body.text("request_id")
        )
        return json_response(render.task_to_json(await self.rpc(request, "Scheduler/PauseTask", message)))

    async def resume(self, request: web.Request) -> web.StreamResponse:
        body = await read_body(request)
        message = S.ResumeTaskRequest(
            task_id=request.match_info["task_id"],
            replay_missed=body.flag("replay_missed"),
            request_id=body.text("request_id"),
        )
        return json_response(render.task_to_json(await self.rpc(request, "Scheduler/ResumeTask", message)))

    async def trigger(self, request: web.Request) -> web.StreamResponse:
        body = await read_body(request)
        message = S.TriggerTaskRequest(
            task_id=request.match_info["task_id"], request_id=body.text("request_id")
        )
        execution = await self.rpc(request, "Scheduler/TriggerTask", message)
        return json_response(render.execution_to_json(execution))

    async def cancel_task(self, request: web.Request) -> web.StreamResponse:
        body = await read_body(request)
        message = S.CancelTaskRequest(
            task_id=request.match_info["task_id"], request_id=body.text("request_id")
        )
        return json_response(render.task_to_json(await self.rpc(request, "Scheduler/CancelTask", message)))

    # ---------------------------------------------------------------------------------- executions

    async def search_executions(self, request: web.Request) -> web.StreamResponse:
        """Executions across tasks (ListExecutions without a task: by states, a fire or end window,
        worker, tags, namespace), newest first, a page at a time."""
        q = Query.of(request)
        message = S.ListExecutionsRequest(
            task_id=q.text("task_id"),
            states=[execution_state(v) for v in q.all("state") if v],
            since_ms=q.integer("since_ms", 0, low=0),
            until_ms=q.integer("until_ms", 0, low=0),
            by_completed=q.flag("by_completed"),
            worker_id=q.text("worker_id"),
            tags=q.pairs("tag"),
            namespace=q.text("namespace"),
            all_namespaces=q.flag("all_namespaces"),
            page_size=q.page_size(),
            page_token=q.text("page_token"),
        )
        resp = await self.rpc(request, "Scheduler/ListExecutions", message)
        return json_response(
            {
                "executions": [execution_row(e) for e in resp.executions],
                "next_page_token": resp.next_page_token,
            }
        )

    async def get_execution(self, request: web.Request) -> web.StreamResponse:
        message = S.GetExecutionRequest(execution_id=request.match_info["execution_id"])
        return json_response(
            render.execution_to_json(await self.rpc(request, "Scheduler/GetExecution", message))
        )

    async def logs(self, request: web.Request) -> web.StreamResponse:
        """One attempt's stdout and stderr from the given offsets (the page polls with the returned
        ones while the attempt runs)."""
        q = Query.of(request)
        message = S.GetExecutionLogsRequest(
            execution_id=request.match_info["execution_id"],
            attempt=q.integer("attempt", 0, low=0, high=2**31 - 1),
            stdout_offset=q.integer("stdout_offset", 0, low=0),
            stderr_offset=q.integer("stderr_offset", 0, low=0),
            max_bytes=q.integer("max_bytes", LOG_MAX_BYTES, low=1, high=LOG_MAX_BYTES),
        )
        resp = await self.rpc(request, "Scheduler/GetExecutionLogs", message)
        return json_response(
            {
                "attempt": resp.attempt,
                "stdout": render.tail_text(resp.stdout),
                "stderr": render.tail_text(resp.stderr),
                "stdout_next_offset": resp.stdout_next_offset,
                "stderr_next_offset": resp.stderr_next_offset,
                "finished": resp.finished,
                "truncated": resp.truncated,
            }
        )

    async def result(self, request: web.Request) -> web.StreamResponse:
        """The execution's stored result (a result file, or a handler's return value) as text, its first
        256 KiB (`schedctl execution result` prints it whole)."""
        message = S.GetExecutionResultRequest(execution_id=request.match_info["execution_id"])
        resp = await self.rpc(request, "Scheduler/GetExecutionResult", message)
        data = bytes(resp.result)
        return json_response(
            {
                "size": len(data),
                "text": render.tail_text(data[:LOG_MAX_BYTES]),
                "truncated": len(data) > LOG_MAX_BYTES,
                "return_value": resp.return_value,
            }
        )

    async def cancel_execution(self, request: web.Request) -> web.StreamResponse:
        body = await read_body(request)
        message = S.CancelExecutionRequest(
            execution_id=request.match_info["execution_id"],
            reason=body.text("reason"),
            request_id=body.text("request_id"),
        )
        return json_response(
            render.execution_to_json(await self.rpc(request, "Scheduler/CancelExecution", message))
        )

    # -------------------------------------------------------------------------------- dead letters

    async def dead_letters(self, request: web.Request) -> web.StreamResponse:
        q = Query.of(request)
        message = S.ListDeadLettersRequest(
            task_id=q.text("task_id"),
            page_size=q.page_size(),
            page_token=q.text("page_token"),
            namespace=q.text("namespace"),
            all_namespaces=q.flag("all_namespaces"),
        )
        resp = await self.rpc(request, "Scheduler/ListDeadLetters", message)
        rows = []
        for d in resp.dead_letters:
            row = render.dead_letter_to_json(d)
            row["stdout_tail"] = row["stdout_tail"][-2000:]  # a list shows the end of the output
            row["stderr_tail"] = row["stderr_tail"][-2000:]
            rows.append(row)
        return json_response({"dead_letters": rows, "next_page_token": resp.next_page_token})

    async def redrive(self, request: web.Request) -> web.StreamResponse:
        body = await read_body(request)
        message = S.RedriveDeadLettersRequest(
            execution_ids=body.texts("execution_ids", most=bounds.MAX_REDRIVE_IDS),
            task_id=body.text("task_id"),
            limit=body.integer("limit"),
            request_id=body.text("request_id"),
        )
        resp = await self.rpc(request, "Scheduler/RedriveDeadLetters", message)
        return json_response({"executions": [execution_row(e) for e in resp.executions]})

    async def purge(self, request: web.Request) -> web.StreamResponse:
        body = await read_body(request)
        message = S.PurgeDeadLettersRequest(
            execution_ids=body.texts("execution_ids", most=bounds.MAX_PURGE_IDS),
            task_id=body.text("task_id"),
            before_ms=body.integer("before_ms"),
            limit=body.integer("limit"),
            namespace=body.text("namespace"),
            request_id=body.text("request_id"),
        )
        resp = await self.rpc(request, "Scheduler/PurgeDeadLetters", message)
        return json_response({"purged": resp.purged})

    # --------------------------------------------------------------------------------------- audit

    async def audit(self, request: web.Request) -> web.StreamResponse:
        q = Query.of(request)
        message = audit_pb2.ListAuditRequest(
            principal=q.text("principal"),
            method=q.text("method"),
            target_id=q.text("target_id"),
            since_ms=q.integer("since_ms", 0, low=0),
            until_ms=q.integer("until_ms", 0, low=0),
            page_size=q.page_size(),
            page_token=q.text("page_token"),
        )
        resp = await self.rpc(request, "Audit/ListAudit", message)
        return json_response(
            {"records": [record_to_json(r) for r in resp.records], "next_page_token": resp.next_page_token}
        )
