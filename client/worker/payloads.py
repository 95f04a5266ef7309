"""The runner for a lease's payload kind (docs/payloads.md): argv commands and shell strings run as process
groups (`client._process_runner.AttemptRunner`, as the policy's run_as user, each with its result file:
`result_files`); HTTP requests (`client._http`) and Python handlers (`client.handlers`) run in-process
(`InProcessRunner`)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

from cronraft.client._http import run_http
from cronraft.client._inprocess_runner import InProcessIO, InProcessRunner, WorkOutcome
from cronraft.client._process_runner import AttemptRunner, ProcessIdentity
from cronraft.client._runner import OutputSink, Runner
from cronraft.client.handlers import HandlerRegistry, run_handler
from cronraft.client.worker.config import WorkerConfig
from cronraft.client.worker.result_files import ResultFiles
from cronraft.clock import Clock
from cronraft.proto.v1 import worker_pb2


class Runners:
    """Makes runners for one worker. `handlers()` is the worker's handler registry at call time."""

    def __init__(
        self,
        config: WorkerConfig,
        clock: Clock,
        *,
        base_env: Mapping[str, str] | None,
        identity: ProcessIdentity | None,
        handlers: Callable[[], HandlerRegistry],
    ) -> None:
        self._config = config
        self._clock = clock
        self._base_env = base_env
        self._identity = identity
        self._handlers = handlers
        self.result_files = ResultFiles(identity)
        # The leader's bound on results (Welcome.max_result_bytes; 0: none told), set on each stream.
        self.cluster_max_result_bytes = 0

    @property
    def max_result_bytes(self) -> int:
        own, cluster = self._config.max_result_bytes, self.cluster_max_result_bytes
        return min(own, cluster) if cluster > 0 else own

    def for_lease(self, lease: worker_pb2.Lease, on_output: OutputSink) -> Runner:
        config = self._config
        kind = lease.payload.WhichOneof("kind")
        if kind in ("http", "handler"):
            work = (
                functools.partial(run_http, lease, policy=config.policy)
                if kind == "http"
                else functools.partial(self._call_handler, lease)
            )
            return InProcessRunner(
                lease,
                work,
                what="HTTP request" if kind == "http" else "handler",
                clock=self._clock,
                kill_grace_s=config.kill_grace_s,
                output_tail_bytes=config.output_tail_bytes,
                on_output=on_output,
            )
        return AttemptRunner(
            lease,
            clock=self._clock,
            kill_grace_s=config.kill_grace_s,
            output_tail_bytes=config.output_tail_bytes,
            on_output=on_output,
            base_env=self._base_env,
            policy=config.policy,
            identity=self._identity,
            result_file=functools.partial(self.result_files.new, lease.execution_id, self.max_result_bytes),
        )

    async def _call_handler(self, lease: worker_pb2.Lease, io: InProcessIO) -> WorkOutcome:
        return await run_handler(
            self._handlers(), lease, io, max_return_value_bytes=self._config.max_return_value_bytes
        )
