"""The node's gRPC services (proto/v1), one module per service; node.py registers the servicers below.

- `scheduler`: the Scheduler service, put together from `tasks`, `executions`, `dead_letters` and
  `calendars` on `common` (the node, `_write`, the namespace checks, and `_abort`: the one place an error
  becomes a gRPC status).
- `worker_gateway`: WorkerGateway, the workers' streams. `cluster`: Cluster (status, the clock probe).
- `audit`: the Audit service, and the call tracking that stamps who asked into each command.
"""

from cronraft.daemon.services.cluster import ClusterServicer
from cronraft.daemon.services.scheduler import SchedulerServicer
from cronraft.daemon.services.worker_gateway import WorkerGatewayServicer

__all__ = ["ClusterServicer", "SchedulerServicer", "WorkerGatewayServicer"]
