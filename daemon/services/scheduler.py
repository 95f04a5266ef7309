"""The Scheduler service (proto/v1/scheduler.proto): one servicer put together from its subjects' methods,
each in its own module (tasks, executions, dead letters, calendars, statistics) on the shared
`SchedulerBase`."""

from __future__ import annotations

from cronraft.daemon.services.calendars import CalendarMethods
from cronraft.daemon.services.dead_letters import DeadLetterMethods
from cronraft.daemon.services.executions import ExecutionMethods
from cronraft.daemon.services.stats import StatsMethods
from cronraft.daemon.services.tasks import TaskMethods
from cronraft.proto.v1 import scheduler_pb2_grpc


class SchedulerServicer(
    TaskMethods,
    ExecutionMethods,
    DeadLetterMethods,
    CalendarMethods,
    StatsMethods,
    scheduler_pb2_grpc.SchedulerServicer,
):
    """`Scheduler`: every method is a subject's; the gRPC base comes last so that none of them is
    shadowed by its UNIMPLEMENTED stub."""


__all__ = ["SchedulerServicer"]
