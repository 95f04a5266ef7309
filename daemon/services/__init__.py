"""The node's gRPC services (proto/v1), one module per service; this step only moves daemon/servicers.py
here as tasks.py and daemon/audit_api.py as audit.py, so that `git log --follow` keeps their history."""

from cronraft.daemon.services.tasks import ClusterServicer, SchedulerServicer, WorkerGatewayServicer

__all__ = ["ClusterServicer", "SchedulerServicer", "WorkerGatewayServicer"]
