"""What the subject modules of `AsyncClient` use of it: its settings, its routing, the bulk loop.

`AsyncClient` (client/aio.py) is composed of one mixin class per subject (`_aio_tasks`, `_aio_bulk`,
`_aio_executions`, `_aio_calendars`, `_aio_dead_letters`, `_aio_cluster`), each a subclass of
`AsyncClientBase`. The base declares what a call may use of the client, so that each subject module
type-checks on its own: the settings `AsyncClient.__init__` sets and the two routing methods
`AsyncClient` defines (`_stubs_for`, `_invoke`). It defines `_bulk`, the loop of the bulk calls of
every subject. Its sync twin, `_sync_base.py`, is generated from this file by scripts/gen_sync_client.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from cronraft.client import _requests, _routing
from cronraft.client._channels import Stubs
from cronraft.client._transport import Transport
from cronraft.errors import CronraftError

__all__ = ["AsyncClientBase"]

_Resp = TypeVar("_Resp")
_Msg = TypeVar("_Msg")


class AsyncClientBase:
    """The part of `AsyncClient` every subject mixin relies on (set and defined by `AsyncClient`)."""

    # Set by `AsyncClient.__init__`.
    namespace: str
    timeout_s: float
    max_redirects: int
    _router: _routing.Router
    _transport: Transport

    def _stubs_for(self, address: str) -> Stubs:
        """The stubs of the channel to `address` (made once); raises `CronraftError` once closed."""
        raise NotImplementedError  # defined by AsyncClient

    async def _invoke(
        self,
        pick: Callable[[Stubs], Callable[..., Any]],
        request: Any,
        response_type: type[_Resp],
        *,
        write: bool,
        request_id: str | None = None,
    ) -> _Resp:
        """One call of the RPC `pick` chooses, routed and retried by a `_routing.CallPlan` (writes to
        the leader, reads to the server that answered last) within the client's `timeout_s`; returns the
        response, or raises the `cronraft.errors` error of the final status."""
        raise NotImplementedError  # defined by AsyncClient

    async def _bulk(
        self, request_ids: Mapping[str, str], call: Callable[[str, str], Awaitable[_Msg]]
    ) -> _requests.BulkResult[_Msg]:
        """`call(item, request_id)` for each item in turn: an item's error is recorded, not raised, and
        once an error says the cluster is out of reach the remaining items are skipped
        (`_requests.stops_bulk`)."""
        result: _requests.BulkResult[_Msg] = _requests.BulkResult(request_ids=dict(request_ids))
        for item, rid in request_ids.items():
            if result.errors and _requests.stops_bulk(list(result.errors.values())[-1]):
                result.skipped.append(item)
                continue
            try:
                result.results[item] = await call(item, rid)
            except CronraftError as exc:
                result.errors[item] = exc
        return result
