"""The Scheduler service's calendar methods: put, delete, read and list the calendars of excluded times
(raft.calendar) that tasks name."""

from __future__ import annotations

from typing import Any

import grpc

from cronraft import bounds, errors
from cronraft.daemon.security.authz import require_role
from cronraft.daemon.services.common import SchedulerBase, _guard, _list_namespace, _page_size
from cronraft.daemon.wire import calendar_name
from cronraft.proto.v1 import commands_pb2, common_pb2, scheduler_pb2
from cronraft.raft import quota
from cronraft.raft import state as sm
from cronraft.raft.firing import calendar_key, check_calendar
from cronraft.raft.validate import check_namespace


class CalendarMethods(SchedulerBase):
    """Scheduler methods on calendars (daemon.services.scheduler composes them with the other subjects)."""

    async def PutCalendar(
        self, request: scheduler_pb2.PutCalendarRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> common_pb2.Calendar:
        async def run() -> common_pb2.Calendar:
            await self.node.writer()
            calendar = common_pb2.Calendar()
            calendar.CopyFrom(request.calendar)
            calendar.namespace = check_namespace(calendar.namespace, "calendar.namespace")
            require_role("PutCalendar", calendar.namespace)
            # The state machine runs the same check when applying (raft.firing.check_calendar); here it
            # keeps a calendar it would refuse out of the log.
            with self.node.kv.read() as txn:
                check_calendar(txn, calendar)
                quota.check_calendar(txn, self.node.limits, calendar_key(calendar.namespace, calendar.name))
            body = commands_pb2.PutCalendar(calendar=calendar)
            return (await self._write("calendar", request.request_id, put_calendar=body)).calendar

        return await _guard(context, run())

    async def DeleteCalendar(
        self, request: scheduler_pb2.DeleteCalendarRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scheduler_pb2.DeleteCalendarResponse:
        body = commands_pb2.DeleteCalendar(name=request.name, namespace=request.namespace)

        async def run() -> commands_pb2.CommandResult:
            calendar_name(request.name, "name")
            body.namespace = check_namespace(request.namespace, "namespace")
            require_role("DeleteCalendar", body.namespace)
            return await self._write("calendar-delete", request.request_id, delete_calendar=body)

        await _guard(context, run())
        return scheduler_pb2.DeleteCalendarResponse()

    async def GetCalendar(
        self, request: scheduler_pb2.GetCalendarRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> common_pb2.Calendar:
        async def run() -> common_pb2.Calendar:
            calendar_name(request.name, "name")
            namespace = check_namespace(request.namespace, "namespace")
            require_role("GetCalendar", namespace)
            with self.node.kv.read() as txn:
                c = sm.read_calendar(txn, request.name, namespace)
            if c is None:
                where = f" in namespace {namespace}" if namespace else ""
                raise errors.NotFound(f"calendar {request.name!r} not found{where}")
            return c

        return await _guard(context, run())

    async def ListCalendars(
        self, request: scheduler_pb2.ListCalendarsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scheduler_pb2.ListCalendarsResponse:
        async def run() -> scheduler_pb2.ListCalendarsResponse:
            size = _page_size(request.page_size, "page_size")
            if request.page_token:  # a stored key: NAME, or NAMESPACE/NAME (raft.firing.calendar_key)
                token_ns, _, token_name = request.page_token.rpartition("/")
                calendar_name(token_name, "page_token")
                check_namespace(token_ns, "page_token")
            namespace = _list_namespace("ListCalendars", request.namespace, request.all_namespaces)
            with self.node.kv.read() as txn:
                calendars, token = sm.calendars_page(
                    txn,
                    page_size=size,
                    page_token=request.page_token,
                    max_bytes=bounds.MAX_PAGE_BYTES,
                    namespace=namespace,
                )
            return scheduler_pb2.ListCalendarsResponse(calendars=calendars, next_page_token=token)

        return await _guard(context, run())


__all__ = ["CalendarMethods"]
