"""The calendar calls of `Client`: put, get, list, delete.

GENERATED from client/_aio_calendars.py by scripts/gen_sync_client.py: edit that file,
then run `make clients` (`make check` fails when this file is stale).
"""

from __future__ import annotations

from cronraft.client import _namespace, _requests
from cronraft.client._sync_base import ClientBase
from cronraft.proto.v1 import common_pb2, scheduler_pb2

__all__ = ["CalendarCalls"]


class CalendarCalls(ClientBase):
    """The calls on stored calendars (named in a namespace)."""

    def put_calendar(
        self, calendar: common_pb2.Calendar, *, request_id: str | None = None
    ) -> common_pb2.Calendar:
        """Create or replace the calendar `calendar.name`; returns it with its new version."""
        rid = request_id or _requests.new_request_id()
        request = scheduler_pb2.PutCalendarRequest(
            calendar=_namespace.calendar_in(calendar, self.namespace), request_id=rid
        )
        return self._invoke(
            lambda s: s.scheduler.PutCalendar, request, common_pb2.Calendar, write=True, request_id=rid
        )

    def get_calendar(self, name: str, *, namespace: str | None = None) -> common_pb2.Calendar:
        """The calendar `name`; raises `NotFound`."""
        request = scheduler_pb2.GetCalendarRequest(
            name=name, namespace=_namespace.wire(namespace or self.namespace)
        )
        return self._invoke(lambda s: s.scheduler.GetCalendar, request, common_pb2.Calendar, write=False)

    def list_calendars(
        self, *, namespace: str | None = None, all_namespaces: bool = False
    ) -> list[common_pb2.Calendar]:
        """Every stored calendar, in name order (read a page at a time)."""
        out: list[common_pb2.Calendar] = []
        scope, every = _namespace.list_scope(namespace, self.namespace, all_namespaces)
        token = ""
        while True:
            response = self._invoke(
                lambda s: s.scheduler.ListCalendars,
                scheduler_pb2.ListCalendarsRequest(
                    page_size=1000, page_token=token, namespace=scope, all_namespaces=every
                ),
                scheduler_pb2.ListCalendarsResponse,
                write=False,
            )
            out.extend(response.calendars)
            token = response.next_page_token
            if not token:
                return out

    def delete_calendar(
        self, name: str, *, request_id: str | None = None, namespace: str | None = None
    ) -> None:
        """Delete the calendar `name`; raises `NotFound`, or `FailedPrecondition` while a task or
        another calendar uses it."""
        rid = request_id or _requests.new_request_id()
        request = scheduler_pb2.DeleteCalendarRequest(
            name=name, request_id=rid, namespace=_namespace.wire(namespace or self.namespace)
        )
        self._invoke(
            lambda s: s.scheduler.DeleteCalendar,
            request,
            scheduler_pb2.DeleteCalendarResponse,
            write=True,
            request_id=rid,
        )
